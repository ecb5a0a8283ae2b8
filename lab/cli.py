"""`opsflow lab`: bring the local lab of real sshd hosts up and down, inspect it, break it."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from opsflow.errors import LabError
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.down import lab_down
from opsflow.lab.hosts.probes import lab_status
from opsflow.lab.hosts.up import lab_up

lab_app = typer.Typer(
    help="The local lab: real sshd hosts on loopback addresses, each running an app to break.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Lab directory (default: $OPSFLOW_HOME/lab, i.e. ~/.opsflow/lab)."),
]


class Breakage(StrEnum):
    """What `lab break` does to a host."""

    service = "service"
    disk = "disk"
    hang = "hang"
    drain = "drain"


def _fail(exc: LabError) -> typer.Exit:
    # Text, not markup: messages hold brackets such as "[127.0.10.1]:2222".
    err_console.print(Text.assemble(("lab: ", "bold red"), str(exc)))
    return typer.Exit(code=1)


def _mark(ok: bool) -> Text:
    return Text("yes", style="green") if ok else Text("NO", style="bold red")


@lab_app.command()
def up(
    hosts: Annotated[int, typer.Option("--hosts", "-n", help="How many hosts.")] = 5,
    base_address: Annotated[
        str, typer.Option("--base-address", help="Loopback address of lab01; +1 per host.")
    ] = "127.0.10.1",
    directory: DirOption = None,
) -> None:
    """Start the lab (a lab already running in the directory is replaced)."""
    try:
        with console.status(f"starting {hosts} lab hosts…"):
            lab = lab_up(directory, hosts=hosts, base_address=base_address)
    except LabError as exc:
        raise _fail(exc) from exc
    table = Table(title=f"lab in {lab.directory}")
    for column in ("host", "address", "ssh port", "app port", "sshd pid"):
        table.add_column(column)
    for host in lab.hosts:
        table.add_row(
            host.name, host.address, str(host.ssh_port), str(host.app_port), str(host.sshd_pid)
        )
    console.print(table)
    first = lab.hosts[0]
    console.print(Text(f"estate:     {lab.estate_dir}"))
    console.print(Text(f"client key: {lab.client_key}"))
    console.print(
        Text(
            f"log in:     ssh -i {lab.client_key} -p {first.ssh_port} "
            f"-o UserKnownHostsFile={lab.estate_dir / 'known_hosts'} root@{first.address}"
        )
    )


@lab_app.command()
def down(directory: DirOption = None) -> None:
    """Stop every lab process and remove the lab directory (no lab: nothing to do)."""
    try:
        lab_down(directory)
    except LabError as exc:
        raise _fail(exc) from exc
    console.print("lab is down")


@lab_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    directory: DirOption = None,
) -> None:
    """Show, per host, whether sshd runs, the ssh port answers and the app is healthy."""
    try:
        rows = lab_status(directory)
    except LabError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("host", "address", "sshd", "ssh answers", "app healthy", "app pid"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["address"],
            _mark(row["sshd_running"]),
            _mark(row["ssh_answers"]),
            _mark(row["app_healthy"]),
            str(row["app_pid"] or "-"),
        )
    console.print(table)


@lab_app.command("break")
def break_(
    host: Annotated[str, typer.Argument(help="Lab host, e.g. lab02.")],
    kind: Annotated[
        Breakage,
        typer.Argument(
            help="service: stop the app; disk: fill /var/log/app; hang: SIGSTOP the app; "
            "drain: take the app out of service (admin API), /health answers 503."
        ),
    ],
    directory: DirOption = None,
) -> None:
    """Break a lab host for real, to give opsflow an incident to handle."""
    try:
        done = break_host(host, kind.value, directory)
    except LabError as exc:
        raise _fail(exc) from exc
    console.print(Text(done))
