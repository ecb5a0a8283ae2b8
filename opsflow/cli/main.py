"""The `opsflow` command: one point of contact for operators on the command line."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from opsflow.cli.access import access_app
from opsflow.cli.db import db_app
from opsflow.cli.incidents import event_app, incident_app
from opsflow.cli.inventory import inventory_app
from opsflow.cli.output import console, err_console, fail, print_json
from opsflow.cli.problems import known_error_app, problem_app
from opsflow.cli.releases import release_app
from opsflow.cli.service_requests import request_app
from opsflow.errors import OpsError
from opsflow.settings import get_settings

app = typer.Typer(help="opsflow: ITIL service operation on Prefect.", no_args_is_help=True)
credentials_app = typer.Typer(help="SSH and HTTP credentials, stored as Prefect blocks.")
app.add_typer(inventory_app, name="inventory")
app.add_typer(credentials_app, name="credentials")


def _lab_app() -> typer.Typer:
    from opsflow.lab.cli import lab_app

    return lab_app


app.add_typer(_lab_app(), name="lab")
app.add_typer(event_app, name="event")
app.add_typer(incident_app, name="incident")
app.add_typer(request_app, name="request")
app.add_typer(release_app, name="release")
app.add_typer(access_app, name="access")
app.add_typer(problem_app, name="problem")
app.add_typer(known_error_app, name="known-error")
app.add_typer(db_app, name="db")


def installed_versions() -> str:
    """opsflow's version from the installed package's metadata, with Prefect's and Python's:
    what a bug report needs, read without importing Prefect."""
    try:
        opsflow = metadata.version("opsflow")
    except metadata.PackageNotFoundError:
        opsflow = "unknown (not installed: pip install -e .)"
    try:
        prefect = metadata.version("prefect")
    except metadata.PackageNotFoundError:
        prefect = "not installed"
    return f"opsflow {opsflow} (prefect {prefect}, python {platform.python_version()})"


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(installed_versions())
        raise typer.Exit()


@app.callback()
def _find_what_up_started(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed opsflow's version (and Prefect's, Python's) and exit.",
        ),
    ] = False,
) -> None:
    # Before any command imports prefect: other shells reach the Prefect API `up` started.
    if ctx.invoked_subcommand != "up":
        from opsflow.runtime.home import use_up_env

        use_up_env(get_settings().home)


@app.command()
def up(
    hosts: Annotated[int, typer.Option(help="Lab hosts to bring up when no estate is set.")] = 5,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server and UI.")] = 4200,
    lab_address: Annotated[
        str, typer.Option(help="Loopback address of the first lab host; the next ones follow.")
    ] = "127.0.10.1",
    monitoring_port: Annotated[
        int,
        typer.Option(
            help="The lab's Prometheus port; its exporter, Alertmanager and the stand-in pager "
            "listen on this +2, +3 and +9."
        ),
    ] = 19090,
    workers: Annotated[
        int, typer.Option(help="Worker processes: triage, restorations, requests, access.")
    ] = 2,
) -> None:
    """Start everything on this machine and run the health check once; Ctrl-C stops it all.

    PostgreSQL (a cluster in the opsflow home, port OPSFLOW_POSTGRES_PORT) holds the Prefect
    server's database and the records, unless PREFECT_API_URL or OPSFLOW_DATABASE_URL name
    others.
    """
    from opsflow.runtime.up import LabPlaces, run_up

    places = LabPlaces(base_address=lab_address, prometheus_port=monitoring_port)
    try:
        run_up(
            get_settings(),
            hosts=hosts,
            port=port,
            console=console,
            lab_places=places,
            workers=workers,
        )
    except OpsError as exc:
        raise fail(exc) from exc


@app.command()
def worker(
    limit: Annotated[int, typer.Option(help="Restorations and triage passes at once.")] = 16,
    nice: Annotated[
        int, typer.Option(help="Lower the CPU priority by N (on a machine shared with a desk).")
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option(help="Address of this worker's /metrics for Prometheus.")
    ] = "127.0.0.1",
    metrics_port: Annotated[
        int, typer.Option(help="Port of this worker's /metrics (0: a free one, in the log).")
    ] = 0,
) -> None:
    """Triage, restore, fulfill requests and change access as Prefect hands out the work,
    until Ctrl-C.

    Run as many as the estate needs, on any machines that reach the records database and
    the Prefect server (see the README's "Scaling out").
    """
    from opsflow.runtime.worker import run_worker

    os.nice(nice)
    try:
        run_worker(limit, metrics_host=metrics_host, metrics_port=metrics_port)
    except OpsError as exc:
        raise fail(exc) from exc


@credentials_app.command("add")
def credentials_add(
    name: Annotated[str, typer.Argument(help="Block name the inventory's hosts refer to.")],
    key_file: Annotated[Path, typer.Option(help="OpenSSH private key file.")],
    username: Annotated[str, typer.Option(help="Default login user.")] = "root",
) -> None:
    """Store a private key as an SSH credentials block on the Prefect server."""
    from opsflow.blocks.registration import register_block_types, save_ssh_credentials

    try:
        register_block_types()
        save_ssh_credentials(name, key_file, username=username)
    except (OSError, ValueError) as exc:
        raise fail(exc) from exc
    console.print(f"SSH credentials block {name!r} saved.")


@credentials_app.command("add-http")
def credentials_add_http(
    name: Annotated[str, typer.Argument(help="Block name a runbook's HTTP steps refer to.")],
    token_file: Annotated[
        Path | None, typer.Option(help="File holding a bearer token (sent as Authorization).")
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="Basic auth user, with --password-file.")
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help="File holding the password.")] = None,
) -> None:
    """Store a bearer token or a user and password as an HTTP credentials block; secrets are
    read from files, never from the command line."""
    from opsflow.blocks.registration import register_block_types, save_http_credentials

    try:
        register_block_types()
        save_http_credentials(
            name,
            bearer_token=token_file.read_text().strip() if token_file else None,
            username=username,
            password=password_file.read_text().strip() if password_file else None,
        )
    except (OSError, ValueError) as exc:
        raise fail(exc) from exc
    console.print(f"HTTP credentials block {name!r} saved.")


@app.command("me")
def me(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Your own tickets, as the desk knows you by your token."""
    from opsflow.cli.incidents import show_me

    show_me(as_json)


@app.command("run")
def run(
    job: Annotated[str, typer.Argument(help="Deployment name in prefect.yaml, e.g. health-check.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result rows as JSON.")] = False,
) -> None:
    """Run a routine job now on the Prefect server, with progress and a per-host summary."""
    from opsflow.cli.jobs import run_job

    try:
        rows = run_job(job, err_console if as_json else console)
    except (OpsError, KeyError) as exc:
        raise fail(exc) from exc
    if as_json:
        print_json(rows)
    if any(row.get("healthy") is False for row in rows):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
