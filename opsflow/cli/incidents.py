"""`opsflow event` and `opsflow incident`: the desk's event intake and incidents from the shell."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from opsflow.cli.output import (
    Column,
    JsonOption,
    LimitOption,
    StatesOption,
    call_desk,
    fitted_table,
    list_records,
    moment,
    name_values,
    print_answer,
)

event_app = typer.Typer(help="Send monitoring events to the desk.")
incident_app = typer.Typer(help="Incidents: list, show, open, resolve.")


@event_app.command("send")
def event_send(
    source: Annotated[str, typer.Option(help="Who saw it, e.g. a script's name.")] = "cli",
    host: Annotated[str | None, typer.Option(help="The host it is about.")] = None,
    service: Annotated[str | None, typer.Option(help="The service it is about.")] = None,
    severity: Annotated[str, typer.Option(help="info, warning or critical.")] = "warning",
    summary: Annotated[str, typer.Option(help="One line for humans.")] = "",
    label: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable.")] = None,
    resolved: Annotated[bool, typer.Option(help="Send the all-clear instead.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Send one generic event; it is classified by the estate's rules like any alert."""
    body = {
        "source": source,
        "host": host,
        "service": service,
        "severity": severity,
        "summary": summary,
        "labels": name_values(label or [], "--label"),
        "status": "resolved" if resolved else "firing",
    }
    answer = call_desk("POST", "/events", json=body)
    print_answer(answer, as_json, f"stored {answer['stored']}, duplicates {answer['duplicates']}")


@event_app.command("failed")
def event_failed(
    limit: Annotated[int, typer.Option(help="Most events to show, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Events triage could not handle (no incident came of them), each with its reason."""
    failed = call_desk("GET", "/events/failed", params={"limit": limit})
    columns = (
        Column("id", whole=True, justify="right"),
        Column("received", whole=True, drop=2),
        Column("source", drop=3),
        Column("CI", min_width=16),
        Column("alert", drop=1),
        Column("reason", min_width=24),
    )
    rows = [
        [
            str(e["id"]),
            moment(e["received_at"]),
            e["source"],
            f"{e['service'] or '-'}@{e['host'] or '-'}",
            e["labels"].get("alertname", ""),
            e["reason"],
        ]
        for e in failed
    ]
    print_answer(
        failed, as_json, fitted_table(columns, rows, title="events triage could not handle")
    )


@event_app.command("retry")
def event_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Failed event ids; none retries every one.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Triage failed events again, once what made them fail (an estate file, a rule) is mended."""
    answer = call_desk("POST", "/events/failed/retry", json={"ids": ids or None})
    print_answer(answer, as_json, f"{len(answer['retried'])} event(s) back before triage")


INCIDENT_COLUMNS = (
    Column("number", whole=True),
    Column("P", whole=True),
    Column("state", whole=True),
    Column("CI", min_width=24),
    Column("symptom", min_width=16),
    Column("events", whole=True, drop=3, justify="right"),
    Column("opened", whole=True, drop=1),
    Column("assigned", drop=2, min_width=8),
)
"""What people scan first (number, priority, state, CI, symptom) stays whole; the event
count, the assignee and the time opened give way on a narrow terminal, in that order."""


def incident_table(incidents: list[dict[str, Any]], title: str | None = None) -> Table:
    """Incidents as a table fitted to the terminal (see `INCIDENT_COLUMNS`)."""
    rows = [
        [
            i["number"],
            f"P{i['priority']}",
            i["state"],
            f"{i['service'] or '-'}@{i['host'] or '-'}",
            i["symptom"],
            str(i["event_count"]),
            moment(i["opened_at"]),
            i["assigned_to"] or i["assignment_group"] or "",
        ]
        for i in incidents
    ]
    return fitted_table(INCIDENT_COLUMNS, rows, title=title)


@incident_app.command("list")
def incident_list(
    state: StatesOption = None,
    host: Annotated[str | None, typer.Option()] = None,
    service: Annotated[str | None, typer.Option()] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Incidents, newest first."""
    incidents = list_records("/incidents", state=state, host=host, service=service, limit=limit)
    print_answer(incidents, as_json, incident_table(incidents))


@incident_app.command("show")
def incident_show(
    incident: Annotated[str, typer.Argument(help="Number (INC0000001) or id.")],
    as_json: JsonOption = False,
) -> None:
    """One incident with its SLA state and worklog."""
    detail = call_desk("GET", f"/incidents/{incident}")
    ttr = detail.get("time_to_restore_s")
    print_answer(
        detail,
        as_json,
        incident_table([detail]),
        f"resolution: {detail['resolution_code'] or '-'} {detail['resolution_notes'] or ''}\n"
        f"time to restore: {f'{ttr:.1f}s' if ttr is not None else '-'}   "
        f"SLA breached: {', '.join(k for k, v in detail['sla_breached'].items() if v) or 'no'}",
        *(
            Text.assemble(
                f"  {entry['at'][:23]}  ", (entry["author"], "bold"), f"  {entry['text']}"
            )
            for entry in detail["worklog"]
        ),
    )


@incident_app.command("open")
def incident_open(
    summary: Annotated[str, typer.Option(help="What is wrong, in one line.")],
    host: Annotated[str | None, typer.Option()] = None,
    service: Annotated[str | None, typer.Option()] = None,
    symptom: Annotated[str, typer.Option()] = "reported",
    impact: Annotated[
        int | None, typer.Option(min=1, max=3, help="Applied for operators, noted for others.")
    ] = None,
    urgency: Annotated[
        int | None, typer.Option(min=1, max=3, help="Applied for operators, noted for others.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Report an incident; prints its number to follow. The desk classifies it like an alert
    about the same CI and symptom, which sets its priority."""
    body = {
        "summary": summary,
        "host": host,
        "service": service,
        "symptom": symptom,
        "impact": impact,
        "urgency": urgency,
    }
    incident = call_desk("POST", "/incidents", json=body)
    print_answer(
        incident, as_json, f"{incident['number']} P{incident['priority']} {incident['state']}"
    )


@incident_app.command("resolve")
def incident_resolve(
    incident: Annotated[str, typer.Argument(help="Number (INC0000001) or id.")],
    notes: Annotated[str, typer.Option(help="What was done.")],
    code: Annotated[str, typer.Option(help="Resolution code.")] = "manual",
    as_json: JsonOption = False,
) -> None:
    """Resolve an incident by hand, with a resolution code and notes."""
    body = {"state": "Resolved", "resolution_code": code, "resolution_notes": notes}
    detail = call_desk("PATCH", f"/incidents/{incident}", json=body)
    print_answer(detail, as_json, f"{detail['number']} {detail['state']}")


def show_me(as_json: bool) -> None:
    """Print who the token belongs to and their own tickets."""
    me = call_desk("GET", "/me")
    request_columns = (
        Column("number", whole=True),
        Column("item"),
        Column("inputs", drop=2),
        Column("state", whole=True),
        Column("outcome", drop=1, min_width=20),
    )
    request_rows = [
        [
            r["number"],
            r["item"],
            ", ".join(f"{k}={v}" for k, v in r["inputs"].items()),
            r["state"],
            (r["outcome"] or "")[:80],
        ]
        for r in me["requests"]
    ]
    grant_columns = (
        Column("id", whole=True, justify="right"),
        Column("entitlement"),
        Column("state", whole=True),
        Column("until", whole=True),
    )
    grant_rows = [
        [str(g["id"]), g["entitlement"], g["state"], moment(g.get("ends_at"))]
        for g in me["access_grants"]
    ]
    print_answer(
        me,
        as_json,
        Text.assemble((me["full_name"] or me["name"], "bold"), f" ({', '.join(me['roles'])})"),
        incident_table(me["incidents"], title="incidents you reported"),
        fitted_table(request_columns, request_rows, title="requests you made"),
        fitted_table(grant_columns, grant_rows, title="your access"),
    )
