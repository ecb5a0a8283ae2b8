"""`opsflow release`: roll a version of a service out, plan it, follow releases, via the desk."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.text import Text

from opsflow.cli.output import (
    Column,
    JsonOption,
    LimitOption,
    StatesOption,
    audit_lines,
    call_desk,
    console,
    fail,
    fitted_table,
    list_records,
    moment,
    print_answer,
)

release_app = typer.Typer(
    help="Releases: deploy a version of a service across its hosts, list, show.",
    no_args_is_help=True,
)

FINAL_STATES = ("deployed", "failed", "canceled")
FOLLOW_S = 0.5
"""How often `release deploy` reads the release while it follows it."""

RELEASE_COLUMNS = (
    Column("number", whole=True),
    Column("service", min_width=8),
    Column("from -> to", min_width=12),
    Column("state", whole=True),
    Column("requester", drop=2),
    Column("requested", whole=True, drop=1),
)


def _release_lines(detail: dict[str, Any]) -> list[Text]:
    """A release as people read it: a headline, each host's step, outcome, rollback, audit."""
    headline = Text.assemble(
        (detail["number"], "bold"),
        f"  {detail['service']} {detail['from_version'] or '?'} -> {detail['to_version']}  ",
        (detail["state"], "bold"),
        f"  requested by {detail['requester']}, approved by {detail['approver']}",
    )
    hosts = [
        Text(f"  {h['host']:<12} {h['previous'] or '-':<16} {h['step']:<16}{h['detail']}")
        for h in detail["hosts"]
    ]
    notes = [
        Text(f"{name}: {detail[name]}")
        for name in ("outcome", "rollback", "request")
        if detail.get(name)
    ]
    return [headline, *hosts, *notes, *audit_lines(detail)]


def _follow(number: str, quiet: bool) -> dict[str, Any]:
    """Read the release until it is final, printing each host's step as it changes (unless
    `quiet`)."""
    seen: dict[str, str] = {}
    while True:
        detail = call_desk("GET", f"/releases/{number}")
        for host in detail["hosts"]:
            if not quiet and seen.get(host["host"]) != host["step"]:
                seen[host["host"]] = host["step"]
                console.print(Text(f"  {host['host']}: {host['step']} {host['detail']}".rstrip()))
        if detail["state"] in FINAL_STATES:
            return detail
        time.sleep(FOLLOW_S)


@release_app.command("deploy")
def deploy(
    service: Annotated[str, typer.Argument(help="The service, as the estate names it.")],
    version: Annotated[str, typer.Argument(help="The release to roll out, e.g. 1.1.0.")],
    batch: Annotated[
        str, typer.Option(help="Hosts changed at once: N, or P% of the service's hosts.")
    ] = "1",
    canary: Annotated[int, typer.Option(min=0, max=1, help="1: change one host alone first.")] = 0,
    pause: Annotated[
        float, typer.Option(min=0, max=3600, help="Seconds to wait between batches.")
    ] = 0.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change and record nothing.")
    ] = False,
    wait: Annotated[
        bool, typer.Option(help="Follow the rollout until it ends (exit 1 if it failed).")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Roll VERSION of SERVICE across its hosts (operators): a canary, batches, health gates,
    and every changed host rolled back if one gate fails."""
    body = {
        "service": service,
        "version": version,
        "batch": batch,
        "canary": canary,
        "pause_s": pause,
    }
    if dry_run:
        plan = call_desk("POST", "/releases/plan", json=body)
        changes = [Text(f"  {change['host']}: {change['detail']}") for change in plan["hosts"]]
        print_answer(plan, as_json, Text(plan["summary"]), *changes)
        return
    detail = call_desk("POST", "/releases", json=body)
    if not as_json:
        console.print(Text(f"{detail['number']} recorded: {service} {version}, batch {batch}"))
    if wait:
        detail = _follow(detail["number"], quiet=as_json)
    print_answer(detail, as_json, *_release_lines({**detail, "audit": []}))
    if detail["state"] == "failed":
        raise fail(f"{detail['number']} failed: {detail['outcome']}")


@release_app.command("list")
def list_releases(
    state: StatesOption = None,
    service: Annotated[str | None, typer.Option(help="Only this service's.")] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Releases, newest first (e.g. --state rolling-out)."""
    records = list_records("/releases", state=state, service=service, limit=limit)
    rows = [
        [
            r["number"],
            r["service"],
            f"{r['from_version'] or '?'} -> {r['to_version']}",
            r["state"],
            r["requester"],
            moment(r["requested_at"]),
        ]
        for r in records
    ]
    print_answer(records, as_json, fitted_table(RELEASE_COLUMNS, rows))


@release_app.command("show")
def show(
    release: Annotated[str, typer.Argument(help="Number (REL0000001) or id.")],
    as_json: JsonOption = False,
) -> None:
    """One release: each host's step, outcome, rollback and audit trail."""
    detail = call_desk("GET", f"/releases/{release}")
    print_answer(detail, as_json, *_release_lines(detail))
