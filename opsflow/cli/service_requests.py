"""`opsflow request`: the service catalog and service requests from the shell, via the desk."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from opsflow.cli.output import (
    Column,
    JsonOption,
    LimitOption,
    RequesterOption,
    StatesOption,
    audit_lines,
    call_desk,
    fitted_table,
    list_records,
    moment,
    name_values,
    print_answer,
)

request_app = typer.Typer(
    help="Service requests: catalog, submit, list, show, approve, reject.", no_args_is_help=True
)

RequestArgument = Annotated[str, typer.Argument(help="Number (REQ0000001) or id.")]
CommentOption = Annotated[str, typer.Option("--comment", "-m", help="Why; kept in the audit.")]

REQUEST_COLUMNS = (
    Column("number", whole=True),
    Column("item", min_width=16),
    Column("state", whole=True),
    Column("requester", drop=2),
    Column("inputs", drop=3, min_width=16),
    Column("submitted", whole=True, drop=1),
)


def _request_lines(detail: dict[str, Any]) -> list[Text]:
    """A request as people read it: a headline, its decision, outcome, attachments, audit."""
    inputs = ", ".join(f"{k}={v}" for k, v in detail["inputs"].items()) or "-"
    lines = [
        Text.assemble(
            (detail["number"], "bold"),
            f"  {detail['item']}  ",
            (detail["state"], "bold"),
            f"  requested by {detail['requester']}  ({inputs})",
        )
    ]
    if detail.get("approver"):
        lines.append(Text(f"decided by {detail['approver']}: {detail['decision_comment'] or '-'}"))
    if detail.get("approval_due_at") and detail["state"] == "awaiting-approval":
        lines.append(Text(f"approval due by {detail['approval_due_at'][:19]}"))
    if detail.get("outcome"):
        lines.append(Text(f"outcome: {detail['outcome']}"))
    for attachment in detail.get("attachments", []):
        lines.append(Text(f"attached: {attachment['path']}  sha256 {attachment['sha256']}"))
    lines.extend(audit_lines(detail))
    return lines


@request_app.command("catalog")
def catalog(as_json: JsonOption = False) -> None:
    """What may be requested: items, their inputs and who approves them."""
    items = call_desk("GET", "/catalog")
    table = Table(title="service catalog")
    for column in ("item", "inputs", "approval", "you may ask"):
        table.add_column(column)
    for item in items:
        inputs = []
        for spec in item["inputs"]:
            shown = spec["name"] + ("" if spec["required"] else "?")
            if spec.get("choices"):
                shown += f" ({'|'.join(spec['choices'])})"
            elif spec["type"] == "integer":
                shown += f" ({spec.get('minimum', '')}..{spec.get('maximum', '')})"
            inputs.append(shown)
        table.add_row(
            Text(f"{item['name']}\n{item['description']}"),
            Text("\n".join(inputs) or "-"),
            Text(item["approval"]),
            "yes" if item["may_request"] else "no",
        )
    print_answer(items, as_json, table)


@request_app.command("submit")
def submit(
    item: Annotated[str, typer.Argument(help="The catalog item, e.g. request-service-restart.")],
    inputs: Annotated[
        list[str] | None, typer.Argument(help="The item's inputs as NAME=VALUE, e.g. host=lab02.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ask for a catalog item; prints the request's number to follow."""
    detail = call_desk(
        "POST", "/requests", json={"item": item, "inputs": name_values(inputs or [], "input")}
    )
    print_answer(detail, as_json, *_request_lines({**detail, "audit": []}))


@request_app.command("list")
def list_requests(
    state: StatesOption = None,
    requester: RequesterOption = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """Requests, newest first (e.g. --state awaiting-approval)."""
    records = list_records("/requests", state=state, requester=requester, limit=limit)
    rows = [
        [
            r["number"],
            r["item"],
            r["state"],
            r["requester"],
            ", ".join(f"{k}={v}" for k, v in r["inputs"].items()),
            moment(r["submitted_at"]),
        ]
        for r in records
    ]
    print_answer(records, as_json, fitted_table(REQUEST_COLUMNS, rows))


@request_app.command("show")
def show(request: RequestArgument, as_json: JsonOption = False) -> None:
    """One request with its decision, outcome, attachments and audit trail."""
    detail = call_desk("GET", f"/requests/{request}")
    print_answer(detail, as_json, *_request_lines(detail))


@request_app.command("approve")
def approve(
    request: RequestArgument, comment: CommentOption = "", as_json: JsonOption = False
) -> None:
    """Approve a request waiting for you (never your own); its fulfillment starts at once."""
    _decide(request, "approve", comment, as_json)


@request_app.command("reject")
def reject(
    request: RequestArgument, comment: CommentOption = "", as_json: JsonOption = False
) -> None:
    """Reject a request waiting for you; the requester is told why."""
    _decide(request, "reject", comment, as_json)


def _decide(request: str, decision: str, comment: str, as_json: bool) -> None:
    """Send `decision` (approve or reject) on a request and print the request as it is now."""
    detail = call_desk("POST", f"/requests/{request}/{decision}", json={"comment": comment})
    print_answer(detail, as_json, *_request_lines({**detail, "audit": []}))
