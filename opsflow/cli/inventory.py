"""`opsflow inventory show HOST`: a host as the inventory describes it and as its facts show it."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from rich.text import Text

from opsflow.cli.output import console, err_console, fail
from opsflow.errors import OpsError
from opsflow.inventory.loader import load_estate
from opsflow.inventory.models import Estate
from opsflow.itsm.drift import find_drift
from opsflow.itsm.store.facts import StoredSnapshot
from opsflow.itsm.store.records import open_records
from opsflow.settings import get_settings

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


def inventory_show(host: str, as_json: bool) -> None:
    """Show a host's inventory entry, its latest facts, a short history and its drift."""
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
