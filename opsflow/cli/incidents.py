"""`opsflow event` and `opsflow incident`: the desk's event intake and incidents from the shell."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from opsflow.cli.output import JsonOption, call_desk, console, name_values, print_json

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
    if as_json:
        print_json(answer)
    else:
        console.print(f"stored {answer['stored']}, duplicates {answer['duplicates']}")


@event_app.command("failed")
def event_failed(
    limit: Annotated[int, typer.Option(help="Most events to show, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Events triage could not handle (no incident came of them), each with its reason."""
    failed = call_desk("GET", "/events/failed", params={"limit": limit})
    if as_json:
        print_json(failed)
        return
    table = Table(title="events triage could not handle")
    for column in ("id", "received", "source", "CI", "alert", "reason"):
        table.add_column(column, no_wrap=column in ("id", "received"))
    for e in failed:
        table.add_row(
            str(e["id"]),
            e["received_at"][:19].replace("T", " "),
            Text(e["source"]),
            Text(f"{e['service'] or '-'}@{e['host'] or '-'}"),
            Text(e["labels"].get("alertname", "")),
            Text(e["reason"]),
        )
    console.print(table)


@event_app.command("retry")
def event_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Failed event ids; none retries every one.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Triage failed events again, once what made them fail (an estate file, a rule) is mended."""
    answer = call_desk("POST", "/events/failed/retry", json={"ids": ids or None})
    if as_json:
        print_json(answer)
    else:
        console.print(f"{len(answer['retried'])} event(s) back before triage")


def incident_table(incidents: list[dict[str, Any]], title: str | None = None) -> Table:
    """Incidents as a table that keeps numbers and states whole on narrow terminals."""
    table = Table(title=title)
    for column in ("number", "P", "state", "CI", "symptom", "events", "opened", "assigned"):
        table.add_column(column, no_wrap=column in ("number", "P", "state", "opened"))
    for i in incidents:
        table.add_row(
            i["number"],
            f"P{i['priority']}",
            i["state"],
            f"{i['service'] or '-'}@{i['host'] or '-'}",
            i["symptom"],
            str(i["event_count"]),
            i["opened_at"][:16].replace("T", " "),
            i["assigned_to"] or i["assignment_group"] or "",
        )
    return table


@incident_app.command("list")
def incident_list(
    state: Annotated[list[str] | None, typer.Option(help="Only these states.")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    service: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: JsonOption = False,
) -> None:
    """Incidents, newest first."""
    params = {"state": state or [], "host": host, "service": service, "limit": limit}
    incidents = call_desk("GET", "/incidents", params={k: v for k, v in params.items() if v})
    if as_json:
        print_json(incidents)
    else:
        console.print(incident_table(incidents))


@incident_app.command("show")
def incident_show(
    incident: Annotated[str, typer.Argument(help="Number (INC0000001) or id.")],
    as_json: JsonOption = False,
) -> None:
    """One incident with its SLA state and worklog."""
    detail = call_desk("GET", f"/incidents/{incident}")
    if as_json:
        print_json(detail)
        return
    console.print(incident_table([detail]))
    ttr = detail.get("time_to_restore_s")
    console.print(
        f"resolution: {detail['resolution_code'] or '-'} {detail['resolution_notes'] or ''}\n"
        f"time to restore: {f'{ttr:.1f}s' if ttr is not None else '-'}   "
        f"SLA breached: {', '.join(k for k, v in detail['sla_breached'].items() if v) or 'no'}"
    )
    for entry in detail["worklog"]:
        console.print(
            Text.assemble(
                f"  {entry['at'][:23]}  ", (entry["author"], "bold"), f"  {entry['text']}"
            )
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
    if as_json:
        print_json(incident)
    else:
        console.print(f"{incident['number']} P{incident['priority']} {incident['state']}")


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
    if as_json:
        print_json(detail)
    else:
        console.print(f"{detail['number']} {detail['state']}")


def show_me(as_json: bool) -> None:
    """Print who the token belongs to and their own tickets."""
    me = call_desk("GET", "/me")
    if as_json:
        print_json(me)
        return
    console.print(
        Text.assemble((me["full_name"] or me["name"], "bold"), f" ({', '.join(me['roles'])})")
    )
    console.print(incident_table(me["incidents"], title="incidents you reported"))
    requests = Table(title="requests you made")
    for column in ("number", "item", "inputs", "state", "outcome"):
        requests.add_column(column, no_wrap=column in ("number", "state"))
    for r in me["requests"]:
        inputs = ", ".join(f"{k}={v}" for k, v in r["inputs"].items())
        requests.add_row(r["number"], r["item"], inputs, r["state"], (r["outcome"] or "")[:80])
    console.print(requests)
    grants = Table(title="your access")
    for column in ("id", "entitlement", "state", "until"):
        grants.add_column(column, no_wrap=True)
    for g in me["access_grants"]:
        grants.add_row(str(g["id"]), g["entitlement"], g["state"], str(g.get("ends_at") or "")[:16])
    console.print(grants)
