"""`opsflow problem` and `opsflow known-error`: Problem Management from the shell, via the desk."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

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

problem_app = typer.Typer(help="Problems: the causes behind recurring incidents.")
known_error_app = typer.Typer(help="Known errors: diagnosed faults and their workarounds.")


def _problem_table(problems: list[dict[str, Any]]) -> Table:
    columns = (
        Column("number", whole=True),
        Column("state", whole=True),
        Column("service"),
        Column("symptom", min_width=16),
        Column("incidents", whole=True, drop=2, justify="right"),
        Column("known errors", drop=3),
        Column("opened", whole=True, drop=1),
    )
    rows = [
        [
            p["number"],
            p["state"],
            p["service"],
            p["symptom"],
            str(len(p["incident_ids"])),
            ", ".join(f"KE{i:07d}" for i in p["known_error_ids"]) or "-",
            moment(p["opened_at"]),
        ]
        for p in problems
    ]
    return fitted_table(columns, rows)


def _known_error_table(known_errors: list[dict[str, Any]]) -> Table:
    columns = (
        Column("number", whole=True),
        Column("signature", min_width=20),
        Column("workaround", min_width=16),
        Column("applied", whole=True, drop=3, justify="right"),
        Column("worked", whole=True, drop=3, justify="right"),
        Column("problem", whole=True, drop=2),
        Column("root cause", drop=1, min_width=20),
    )
    rows = []
    for ke in known_errors:
        signature = f"{ke['service']}/{ke['symptom']}" + (f" on {ke['host']}" if ke["host"] else "")
        if ke["labels"]:
            signature += " " + ",".join(f"{k}={v}" for k, v in sorted(ke["labels"].items()))
        rows.append(
            [
                ke["number"] + (" (retired)" if ke["retired_at"] else ""),
                signature,
                ke["workaround"],
                str(ke["times_applied"]),
                str(ke["times_worked"]),
                f"PRB{ke['problem_id']:07d}" if ke["problem_id"] else "-",
                ke["root_cause"][:60],
            ]
        )
    return fitted_table(columns, rows)


@problem_app.command("list")
def problem_list(
    state: StatesOption = None,
    service: Annotated[str | None, typer.Option()] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Problems, newest first."""
    problems = list_records("/problems", state=state, service=service, limit=limit)
    print_answer(problems, as_json, _problem_table(problems))


@problem_app.command("show")
def problem_show(
    problem: Annotated[str, typer.Argument(help="Number (PRB0000001) or id.")],
    as_json: JsonOption = False,
) -> None:
    """One problem with its root-cause notes and the incidents it explains."""
    detail = call_desk("GET", f"/problems/{problem}")
    notes = detail["resolution_notes"]
    incidents = ", ".join(f"INC{i:07d}" for i in detail["incident_ids"]) or "-"
    print_answer(
        detail,
        as_json,
        _problem_table([detail]),
        f"summary: {detail['summary']}",
        f"root cause: {detail['root_cause'] or '-'}",
        *([f"resolution: {notes}"] if notes else []),
        f"incidents: {incidents}",
    )


@problem_app.command("update")
def problem_update(
    problem: Annotated[str, typer.Argument(help="Number (PRB0000001) or id.")],
    state: Annotated[str | None, typer.Option(help="Move to this state.")] = None,
    root_cause: Annotated[str | None, typer.Option(help="Root-cause notes.")] = None,
    notes: Annotated[str | None, typer.Option(help="Resolution notes.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add root-cause notes or move a problem on (New → Root Cause Analysis → …)."""
    body = {"state": state, "root_cause": root_cause, "resolution_notes": notes}
    detail = call_desk(
        "PATCH", f"/problems/{problem}", json={k: v for k, v in body.items() if v is not None}
    )
    print_answer(detail, as_json, f"{detail['number']} {detail['state']}")


@known_error_app.command("add")
def known_error_add(
    service: Annotated[str, typer.Option(help="The service the fault shows on.")],
    symptom: Annotated[str, typer.Option(help="The incidents' symptom, e.g. service-down.")],
    root_cause: Annotated[str, typer.Option(help="What causes it.")],
    workaround: Annotated[str, typer.Option(help="Runbook that restores service meanwhile.")],
    host: Annotated[str | None, typer.Option(help="Only on this host.")] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE an event must carry, repeatable.")
    ] = None,
    problem: Annotated[str | None, typer.Option(help="The problem it comes from.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record a known error; triage applies its workaround to matching new incidents."""
    body = {
        "service": service,
        "symptom": symptom,
        "host": host,
        "labels": name_values(label or [], "--label"),
        "root_cause": root_cause,
        "workaround": workaround,
        "problem": problem,
    }
    known_error = call_desk("POST", "/known-errors", json=body)
    print_answer(
        known_error,
        as_json,
        f"{known_error['number']} recorded: workaround {known_error['workaround']}",
    )


@known_error_app.command("list")
def known_error_list(
    service: Annotated[str | None, typer.Option()] = None,
    retired: Annotated[bool, typer.Option("--retired", help="Include retired ones.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Known errors with how often their workaround was applied and worked."""
    known_errors = list_records("/known-errors", service=service, include_retired=retired)
    print_answer(known_errors, as_json, _known_error_table(known_errors))
