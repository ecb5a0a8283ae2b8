"""`opsflow inventory`: check the estate, show a host as the inventory describes it and as its
facts show it, and import an estate from another tool."""

from __future__ import annotations

import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from opsflow.cli.output import (
    Column,
    JsonOption,
    console,
    err_console,
    fail,
    fitted_table,
    print_json,
)
from opsflow.errors import InventoryError, OpsError
from opsflow.inventory.ansible import MAX_INVENTORY_BYTES, hosts_from_ansible, render_hosts
from opsflow.inventory.known_hosts import KnownHosts
from opsflow.inventory.loader import load_estate
from opsflow.inventory.models import Estate
from opsflow.settings import get_settings

if TYPE_CHECKING:
    from opsflow.itsm.store.facts import StoredSnapshot

inventory_app = typer.Typer(help="The estate: hosts, services and their checks.")
import_app = typer.Typer(help="Write an estate's hosts.yaml from another tool's inventory.")
inventory_app.add_typer(import_app, name="import")

MAX_KNOWN_HOSTS_BYTES = 16 * 1024 * 1024
SHOWN_PROBLEMS = 100
"""Problems of a refused import listed one by one; the rest are counted."""


class InventoryForm(StrEnum):
    """How an Ansible inventory file is written."""

    AUTO = "auto"
    YAML = "yaml"
    INI = "ini"


HISTORY = 10
"""Snapshots shown in the short history."""


def _fullest(snapshot: StoredSnapshot) -> tuple[str, float] | None:
    disks = (snapshot.facts or {}).get("disks") or []
    if not disks:
        return None
    disk = max(disks, key=lambda d: d["used_percent"])
    return disk["mount"], disk["used_percent"]


def _mem_percent(facts: dict[str, Any]) -> float | None:
    total = facts.get("mem_total_kb") or 0
    return round(100 * (1 - facts.get("mem_available_kb", 0) / total), 1) if total else None


def _inventory_entry(estate: Estate | None, host: str) -> dict[str, Any] | None:
    if estate is None:
        return None
    try:
        entry = estate.host(host)
    except KeyError:
        return None
    services = [s.name for s in estate.services if entry in estate.hosts_of(s)]
    return {
        "address": entry.address,
        "port": entry.port,
        "user": entry.user,
        "groups": list(entry.groups),
        "labels": dict(entry.labels),
        "services": services,
    }


def _history_table(host: str, history: list[StoredSnapshot]) -> Table:
    table = Table(title=f"{host}: last {len(history)} fact gatherings")
    for column in ("gathered (UTC)", "reachable", "load 1m", "mem %", "fullest disk", "services"):
        table.add_column(column)
    for snap in history:
        facts = snap.facts or {}
        fullest = _fullest(snap)
        table.add_row(
            f"{snap.gathered_at:%Y-%m-%d %H:%M:%S}",
            "yes"
            if snap.reachable
            else Text.assemble(("no", "red"), f": {(snap.error or '')[:60]}"),
            str(facts.get("load", ["", ""])[0]) if facts else "",
            str(_mem_percent(facts) or "") if facts else "",
            f"{fullest[0]} {fullest[1]}%" if fullest else "",
            Text(", ").join(
                Text.assemble(f"{name} ", (state, "" if state == "running" else "red"))
                for name, state in sorted(snap.services.items())
            ),
        )
    return table


@inventory_app.command("check")
def inventory_check(
    directory: Annotated[
        Path | None, typer.Argument(help="Estate directory (default: OPSFLOW_INVENTORY or lab).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate the estate and print its summary, or every problem found (exit 1)."""
    directory = directory or get_settings().estate_dir
    try:
        estate = load_estate(directory)
    except OpsError as exc:
        raise fail(exc) from exc
    if as_json:
        console.print_json(estate.model_dump_json())
        return
    columns = (
        Column("host", whole=True),
        Column("address", whole=True),
        Column("port", whole=True, drop=2, justify="right"),
        Column("user", whole=True, drop=3),
        Column("groups", drop=1),
        Column("services"),
    )
    rows = [
        [
            host.name,
            host.address,
            str(host.port),
            host.user,
            ", ".join(host.groups),
            ", ".join(s.name for s in estate.services if host in estate.hosts_of(s)),
        ]
        for host in estate.hosts
    ]
    console.print(fitted_table(columns, rows, title=f"estate {estate.settings.name} ({directory})"))
    console.print(
        f"{len(estate.hosts)} hosts, {len(estate.groups)} groups, {len(estate.services)} services:"
        " valid."
    )


@inventory_app.command("show")
def inventory_show(
    host: Annotated[str, typer.Argument(help="Host name, as in the inventory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A host's inventory entry, latest facts, a short history of them, and its drift."""
    from opsflow.itsm.drift import find_drift
    from opsflow.itsm.store.records import open_records

    try:
        estate: Estate | None = load_estate(get_settings().estate_dir)
    except OpsError as exc:
        err_console.print(Text.assemble(("warning:", "yellow"), f" inventory not loaded: {exc}"))
        estate = None
    try:
        history = open_records().facts.history(host, limit=HISTORY)
    except OpsError as exc:
        raise fail(exc) from exc
    entry = _inventory_entry(estate, host)
    if entry is None and not history:
        raise fail(f"no host {host!r} in the inventory or the facts")
    drift = []
    if estate is not None and entry is not None:
        drift = [d for d in find_drift(estate, history[:1]) if d.host == host]
    latest = history[0] if history else None
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "host": host,
                    "inventory": entry,
                    "latest": latest.model_dump(mode="json") if latest else None,
                    "history": [s.model_dump(mode="json", exclude={"facts"}) for s in history],
                    "drift": [d.model_dump() for d in drift],
                }
            )
        )
        return
    if entry is None:
        console.print(
            Text.assemble(
                (f"{host} is not in the inventory", "yellow"), " (facts from earlier runs)"
            )
        )
    else:
        console.print(
            Text.assemble(
                (host, "bold"),
                f" {entry['address']}:{entry['port']} as {entry['user']}; "
                f"groups {', '.join(entry['groups']) or '-'}; "
                f"services {', '.join(entry['services']) or '-'}",
            )
        )
    if latest is None:
        console.print("No facts gathered yet: run `opsflow run gather-facts`.")
    elif latest.facts:
        facts = latest.facts
        table = Table(title=f"latest facts ({latest.gathered_at:%Y-%m-%d %H:%M:%S} UTC)")
        table.add_column("fact")
        table.add_column("value")
        table.add_row("os", str(facts.get("os")))
        table.add_row("kernel", str(facts.get("kernel")))
        table.add_row("uptime", f"{facts.get('uptime_s', 0) / 3600:.1f} h")
        table.add_row("load", " ".join(str(x) for x in facts.get("load", [])))
        table.add_row(
            "memory",
            f"{facts.get('mem_total_kb', 0) // 1024} MiB, {_mem_percent(facts)}% used",
        )
        for disk in facts.get("disks", []):
            table.add_row(
                f"disk {disk['mount']}",
                f"{disk['used_percent']}% of {disk['size_kb'] // 1024} MiB",
            )
        for name, state in sorted(latest.services.items()):
            table.add_row(f"service {name}", state)
        console.print(table)
    else:
        console.print(
            Text.assemble(
                ("unreachable", "red"),
                f" at {latest.gathered_at:%Y-%m-%d %H:%M:%S} UTC: {latest.error}",
            )
        )
    if history:
        console.print(_history_table(host, history))
    if drift:
        for item in drift:
            console.print(
                Text.assemble(("drift", "red"), f" {item.kind} {item.service or ''}: {item.detail}")
            )
    elif latest is not None and entry is not None:
        console.print("No drift: the host answered and runs what the inventory says.")


def _read_text(path: Path, what: str, limit: int) -> str:
    """A file's text, read no further than `limit` bytes; a refusal names the file and why."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise fail(f"{what} {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise fail(f"{what} {path}: larger than {limit // (1024 * 1024)} MiB")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise fail(f"{what} {path}: not UTF-8 text (byte {exc.start})") from exc


def _write_whole(target: Path, text: str, replace: bool) -> None:
    """Write `target` all at once: a temporary file in its directory, then linked (refusing an
    existing file) or renamed over it. A reader sees the old file or the new, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        if replace:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # fails if the target exists, even if made meanwhile
    finally:
        Path(temporary).unlink(missing_ok=True)


@import_app.command("ansible")
def import_ansible(
    inventory: Annotated[Path, typer.Argument(help="An Ansible inventory file (YAML or INI).")],
    known_hosts: Annotated[
        Path,
        typer.Option(help="known_hosts file holding every host's key (e.g. ~/.ssh/known_hosts)."),
    ],
    out: Annotated[
        Path, typer.Option(help="Estate directory to write hosts.yaml in (made if missing).")
    ] = Path("."),
    form: Annotated[
        InventoryForm,
        typer.Option("--format", help="auto: YAML for .yml, .yaml or .json files, else INI."),
    ] = InventoryForm.AUTO,
    credentials: Annotated[
        str | None,
        typer.Option(help="SSH credentials block every host logs in with (default opsflow-lab)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing hosts.yaml.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write hosts.yaml from an Ansible inventory: names, ansible_host, ansible_port,
    ansible_user, groups (nested children too) and each host's key from known_hosts.

    A host whose key is not in the known_hosts file is refused, and so is the whole import:
    every problem is listed and nothing is written. Hosts without ansible_user log in as root.
    """
    if form is InventoryForm.AUTO:
        yaml_suffixes = (".yml", ".yaml", ".json")
        form = (
            InventoryForm.YAML if inventory.suffix.lower() in yaml_suffixes else InventoryForm.INI
        )
    target = out / "hosts.yaml"
    if target.exists() and not force:
        raise fail(f"{target} exists: give --force to replace it")
    text = _read_text(inventory, "inventory", MAX_INVENTORY_BYTES)
    keys = KnownHosts.parse(_read_text(known_hosts, "known_hosts", MAX_KNOWN_HOSTS_BYTES))
    try:
        hosts = hosts_from_ansible(
            text, "yaml" if form is InventoryForm.YAML else "ini", keys, credentials
        )
    except InventoryError as exc:
        shown = [f"  - {p}" for p in exc.problems[:SHOWN_PROBLEMS]]
        if len(exc.problems) > SHOWN_PROBLEMS:
            shown.append(f"  … and {len(exc.problems) - SHOWN_PROBLEMS} more")
        listed = "\n".join(shown)
        raise fail(
            f"{inventory}: nothing written, {len(exc.problems)} problem(s):\n{listed}"
        ) from exc
    try:
        _write_whole(target, render_hosts(hosts), replace=force)
    except FileExistsError as exc:
        raise fail(f"{target} exists: give --force to replace it") from exc
    except OSError as exc:
        raise fail(f"{target}: {exc.strerror}") from exc
    groups = sorted({g for host in hosts for g in host.groups})
    if as_json:
        print_json({"hosts_yaml": str(target), "hosts": [h.name for h in hosts], "groups": groups})
        return
    console.print(
        f"{target}: {len(hosts)} hosts in {len(groups)} groups, each with its pinned key.\n"
        f"Next: opsflow inventory check {out}",
        soft_wrap=True,
    )
