"""`opsflow access`: request, approve, reject, revoke, list and review access through the desk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from opsflow.cli.output import (
    Column,
    JsonOption,
    LimitOption,
    RequesterOption,
    StatesOption,
    call_desk,
    err_console,
    fail,
    fitted_table,
    list_records,
    moment,
    print_answer,
)

access_app = typer.Typer(help="Access to hosts: request, approve, reject, revoke, list, review.")

LIVE = ("approved", "active")

WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait until the hosts are done.")
]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait at most.")]


GRANT_COLUMNS = (
    Column("id", whole=True, justify="right"),
    Column("state", whole=True),
    Column("entitlement", min_width=16),
    Column("user", whole=True),
    Column("requester", drop=3),
    Column("approver", drop=4),
    Column("hosts", drop=2, min_width=16),
    Column("ends", whole=True, drop=1),
)
"""Who has what, and its state, stay; the approver, the requester (mostly the user), the hosts
(the entitlement's group) and the end give way on a narrow terminal, in that order."""


def _table(grants: list[dict[str, Any]]) -> Table:
    rows = [
        [
            str(g["id"]),
            g["state"] + (" (revoking)" if g["revoke_requested_at"] and g["state"] in LIVE else ""),
            g["entitlement"],
            g["username"],
            g["requester"],
            g["approver"] or "",
            ", ".join(g["hosts"]) or g["host_group"],
            moment(g["ends_at"]),
        ]
        for g in grants
    ]
    return fitted_table(GRANT_COLUMNS, rows)


def _wait(grant_id: int, done: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
    """Poll the grant until it reaches one of `done`, or a run reports an error."""
    deadline = time.monotonic() + timeout_s
    with err_console.status(f"waiting for access grant {grant_id}…"):
        while True:
            grant = call_desk("GET", f"/access-grants/{grant_id}")
            if grant["state"] in done:
                return grant
            if grant.get("last_error"):
                raise fail(f"access grant {grant_id}: {grant['last_error']}")
            if time.monotonic() > deadline:
                raise fail(
                    f"access grant {grant_id} is still {grant['state']} after {timeout_s:g}s"
                )
            time.sleep(0.2)


@access_app.command("request")
def access_request(
    entitlement: Annotated[str, typer.Argument(help="Entitlement name, e.g. web-login.")],
    minutes: Annotated[float | None, typer.Option(help="How long; default the longest.")] = None,
    hours: Annotated[float | None, typer.Option(help="How long, in hours.")] = None,
    username: Annotated[str | None, typer.Option(help="Account name; default yours.")] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="Public key file; default yours in people.yaml.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the approver.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Ask for an entitlement for yourself; an approver then approves or rejects it."""
    if minutes is not None and hours is not None:
        raise fail("give --minutes or --hours, not both")
    body: dict[str, Any] = {"entitlement": entitlement, "reason": reason}
    if hours is not None:
        minutes = hours * 60
    if minutes is not None:
        body["duration_minutes"] = minutes
    if username:
        body["username"] = username
    if key_file:
        try:
            body["ssh_public_key"] = key_file.read_text().strip()
        except OSError as exc:
            raise fail(f"--key-file {key_file}: {exc.strerror}") from exc
    grant = call_desk("POST", "/access-requests", json=body)
    print_answer(
        grant,
        as_json,
        f"access grant {grant['id']} requested: {grant['entitlement']} as {grant['username']} "
        f"for {grant['duration_minutes']:g} min; waiting for an approver",
    )


@access_app.command("approve")
def access_approve(
    grant_id: Annotated[int, typer.Argument(help="The access grant's id.")],
    comment: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
    as_json: JsonOption = False,
) -> None:
    """Approve a request (never your own) and, by default, wait until the access is in place."""
    grant = call_desk("POST", f"/access-requests/{grant_id}/approve", json={"comment": comment})
    if wait:
        grant = _wait(grant_id, ("active", "expired", "revoked"), timeout)
    where = ""
    if grant["hosts"] and grant["ends_at"]:
        where = f" on {', '.join(grant['hosts'])} until {grant['ends_at'][:19]}Z"
    print_answer(grant, as_json, f"access grant {grant_id} {grant['state']}{where}")


@access_app.command("reject")
def access_reject(
    grant_id: Annotated[int, typer.Argument(help="The access grant's id.")],
    comment: Annotated[str, typer.Option(help="Why, for the requester.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Deny a request (never your own)."""
    grant = call_desk("POST", f"/access-requests/{grant_id}/reject", json={"comment": comment})
    print_answer(grant, as_json, f"access grant {grant_id} {grant['state']}")


@access_app.command("revoke")
def access_revoke(
    grant_id: Annotated[int, typer.Argument(help="The access grant's id.")],
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
    as_json: JsonOption = False,
) -> None:
    """Take a grant's access away from its hosts now (or withdraw a pending request)."""
    grant = call_desk("DELETE", f"/access-grants/{grant_id}")
    if wait and grant["state"] in ("approved", "active"):
        grant = _wait(grant_id, ("revoked", "expired"), timeout)
    print_answer(grant, as_json, f"access grant {grant_id} {grant['state']}")


@access_app.command("list")
def access_list(
    state: StatesOption = None,
    requester: RequesterOption = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Access grants, newest first."""
    grants = list_records("/access-grants", state=state, requester=requester, limit=limit)
    print_answer(grants, as_json, _table(grants))


@access_app.command("review")
def access_review(
    enforce: Annotated[
        bool, typer.Option("--enforce", help="Remove what no grant explains.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare every host's managed accounts, keys and sudo rules with the live grants."""
    rows = call_desk("POST", "/access-reviews", json={"enforce": enforce})
    table = Table()
    for column in ("host", "kind", "name", "explained by", "action", "detail"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["host"], r["kind"], r["name"], r["explained_by"] or "-", r["action"], r["detail"]
        )
    unexplained = [r for r in rows if r["explained_by"] is None]
    print_answer(
        rows, as_json, table, f"{len(unexplained)} of {len(rows)} item(s) explained by no grant."
    )
    if any(r["action"] == "failed" for r in rows):
        raise typer.Exit(1)
