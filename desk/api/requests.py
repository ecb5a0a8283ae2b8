"""The desk's service requests: the catalog, submitting, following, approving and rejecting.

A new request is recorded and answered at once (201), and a worker is woken to carry it
(`fulfill-request`): its `request-fulfillment` flow runs in a thread of that worker
(`desk.runners.fulfillments`), so it starts in milliseconds instead of waiting for a runner to poll
for a deployment run. An approval is authenticated here, checked against the item's policy
(never the requester), signed with the key in the `opsflow-approval-key` Secret block, and
sent through the Prefect API to the paused run, in whichever worker it waits, as its run
input; the flow records the decision and the desk answers once it has.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from opsflow.desk.api.schema import Limit, States
from opsflow.desk.deps import (
    CurrentEstate,
    Publish,
    Reader,
    Requests,
    Wake,
    may_read,
    sees_everything,
)
from opsflow.inventory.models import CatalogItem, Estate, Person
from opsflow.itsm.approvals import ApprovalRefusedError, approvable_items, check_approver
from opsflow.itsm.catalog import (
    InvalidRequestError,
    NotEntitledError,
    input_choices,
    validate_request,
)
from opsflow.itsm.records import AuditEntry
from opsflow.itsm.requests import (
    PENDING_STATES,
    Decision,
    DecisionIn,
    RequestCreate,
    ServiceRequest,
    decision_signature,
)
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.requests import RequestQuotaError
from opsflow.itsm.store.requests import Requests as RequestRecords

logger = logging.getLogger("opsflow.desk.requests")

router = APIRouter(prefix="/api/v1", tags=["requests"])

PAUSE_WAIT_S = 10.0
"""How long an approval waits for a just-submitted request's run to reach its pause."""
DECISION_WAIT_S = 10.0
"""How long an approval waits for the resumed run to record the decision before answering."""


# -- payloads ---------------------------------------------------------------------------


class CatalogInputView(BaseModel):
    """One input of a catalog item, with the choices the estate offers now."""

    name: str
    type: str
    description: str
    required: bool
    choices: list[str] | None = None
    pattern: str | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None


class CatalogEntry(BaseModel):
    """A catalog item as the person asking sees it."""

    name: str
    description: str
    inputs: list[CatalogInputView]
    approval: str
    approval_timeout_minutes: float | None = None
    on_timeout: str | None = None
    fulfill_within_minutes: float
    may_request: bool


class RequestDetail(ServiceRequest):
    """A service request with its audit trail."""

    audit: list[AuditEntry]


def _describe_approvers(item: CatalogItem) -> str:
    if item.approval.policy == "none":
        return "none: a standard, pre-approved request"
    who = item.approval.approvers
    names = (
        [f"role {r}" for r in who.roles]
        + [f"team {t}" for t in who.teams]
        + [f"person {p}" for p in who.people]
    )
    return "one approver: " + ", ".join(names) + " (never the requester)"


def _entry(item: CatalogItem, estate: Estate, person: Person) -> CatalogEntry:
    inputs = []
    for spec in item.inputs:
        inputs.append(
            CatalogInputView(
                name=spec.name,
                type=spec.type,
                description=spec.description,
                required=spec.required,
                choices=input_choices(spec, estate),
                pattern=spec.pattern if spec.type == "string" else None,
                max_length=spec.max_length if spec.type == "string" else None,
                minimum=spec.minimum,
                maximum=spec.maximum,
            )
        )
    needs_approval = item.approval.policy != "none"
    return CatalogEntry(
        name=item.name,
        description=item.description,
        inputs=inputs,
        approval=_describe_approvers(item),
        approval_timeout_minutes=item.approval.timeout_minutes if needs_approval else None,
        on_timeout=item.approval.on_timeout if needs_approval else None,
        fulfill_within_minutes=item.fulfill_within_minutes,
        may_request=item.requesters.admits(person),
    )


def _detail(requests: RequestRecords, id_or_number: str | int) -> RequestDetail:
    record = requests.get(id_or_number)
    return RequestDetail(**record.model_dump(), audit=requests.audit_trail(record.id))


def _visible(
    requests: RequestRecords, id_or_number: str, estate: Estate, person: Person
) -> ServiceRequest:
    """The request if `person` may read it; otherwise 404, exactly as if there were none."""
    record = requests.get(id_or_number)
    if may_read(person, record.requester, record.item, approvable_items(estate, person)):
        return record
    raise RecordNotFoundError("service request", id_or_number)


def _unprocessable(exc: InvalidRequestError) -> HTTPException:
    detail = [
        {"loc": ["body", *field.split(".")], "msg": reason, "type": "invalid_request"}
        for field, reason in exc.problems
    ]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


# -- endpoints --------------------------------------------------------------------------


@router.get("/catalog")
def list_catalog(person: Reader, estate: CurrentEstate) -> list[CatalogEntry]:
    """Every catalog item, its inputs with the estate's current choices, and its approval."""
    return [_entry(item, estate, person) for item in estate.catalog]


@router.post("/requests", status_code=status.HTTP_201_CREATED)
def submit_request(
    body: RequestCreate,
    person: Reader,
    estate: CurrentEstate,
    requests: Requests,
    wake: Wake,
    publish: Publish,
) -> RequestDetail:
    """Ask for a catalog item; refused with every bad field named (422) and nothing recorded."""
    try:
        item, _, inputs = validate_request(estate, body.item, body.inputs, person.name)
    except InvalidRequestError as exc:
        raise _unprocessable(exc) from None
    except NotEntitledError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    try:
        record = requests.create(
            item.name,
            inputs,
            person.name,
            item.approval.policy,
            person.name,
            datetime.now(UTC),
            max_open=estate.settings.max_open_requests_per_person,
        )
    except RequestQuotaError as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc)) from None
    publish(record, "submitted")
    wake.request_submitted()
    return _detail(requests, record.id)


@router.get("/requests")
def list_requests(
    person: Reader,
    estate: CurrentEstate,
    requests: Requests,
    state: States = None,
    requester: str | None = None,
    limit: Limit = 100,
) -> list[ServiceRequest]:
    """Service requests, newest first, filtered by state or requester.

    Operators see every request; others their own and those they may approve.
    """
    everything = sees_everything(person)
    return requests.list(
        state=state,
        requester=requester,
        limit=limit,
        visible_to=None if everything else person.name,
        items=() if everything else approvable_items(estate, person),
    )


@router.get("/requests/{request_id}")
def show_request(
    request_id: str, person: Reader, estate: CurrentEstate, requests: Requests
) -> RequestDetail:
    """One request by id or number (REQ0000001), with its audit trail (404 if not yours)."""
    record = _visible(requests, request_id, estate, person)
    return _detail(requests, record.id)


def _route_decision(decision: Decision) -> None:
    """Route `POST /requests/{id}/approve` or `.../reject`: one endpoint, either decision,
    documented as its own operation (`approve_request`, `reject_request`)."""

    def decide(
        request_id: str,
        person: Reader,
        estate: CurrentEstate,
        requests: Requests,
        body: DecisionIn | None = None,
    ) -> RequestDetail:
        comment = (body or DecisionIn()).comment
        return _decide(requests, estate, request_id, person, decision, comment)

    router.post(
        f"/requests/{{request_id}}/{decision}",
        name=f"{decision}_request",
        description=f"{decision.capitalize()} a request waiting for approval: the policy's "
        "approvers only, never the requester.",
    )(decide)


_route_decision("approve")
_route_decision("reject")


def _decide(
    requests: RequestRecords,
    estate: Estate,
    request_id: str,
    person: Person,
    decision: Decision,
    comment: str,
) -> RequestDetail:
    """Check the approver, wait for the run's pause, resume it with a signed decision."""
    record = _visible(requests, request_id, estate, person)
    try:
        item = estate.catalog_item(record.item)
    except KeyError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{record.number}: item {record.item} left the catalog"
        ) from None
    if item.approval.policy == "none":
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{record.number} is a standard request: nobody approves it"
        )
    if record.state not in PENDING_STATES:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{record.number} is {record.state}: nothing to decide"
        )
    try:
        check_approver(person, record.requester, item.approval.approvers, record.number)
    except ApprovalRefusedError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    record = _paused(requests, record)
    run_id = record.approval_run_id or ""
    from opsflow.flows.request_fulfillment import approval_key, decision_sent

    key = approval_key(create=True) or b""
    run_input = {
        "decision": decision,
        "comment": comment,
        "approver": person.name,
        "signature": decision_signature(key, record.id, run_id, decision, person.name, comment),
    }
    _resume(record, run_id, run_input)
    # A run waiting in this process is woken now; one in a worker finds it resumed at its
    # process's next shared check (RESUME_CHECK_S), well within DECISION_WAIT_S.
    decision_sent(run_id)
    requests.note(
        record.id,
        person.name,
        "decision_sent",
        {"decision": decision, "comment": comment, "flow_run_id": run_id},
        datetime.now(UTC),
    )
    deadline = time.monotonic() + DECISION_WAIT_S
    while time.monotonic() < deadline:
        if requests.get(record.id).state != "awaiting-approval":
            break
        time.sleep(0.1)
    return _detail(requests, record.id)


def _paused(requests: RequestRecords, record: ServiceRequest) -> ServiceRequest:
    """The record once its run is paused for a decision; 409 if that does not happen soon."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + PAUSE_WAIT_S
    with get_client(sync_client=True) as client:
        while True:
            if record.state == "awaiting-approval" and record.approval_run_id:
                run = client.read_flow_run(UUID(record.approval_run_id))
                if run.state is not None and run.state.is_paused():
                    return record
            if record.state not in PENDING_STATES or time.monotonic() > deadline:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"{record.number} is not waiting for a decision (state {record.state}); "
                    "try again in a moment",
                )
            time.sleep(0.1)
            record = requests.get(record.id)


def _resume(record: ServiceRequest, run_id: str, run_input: dict[str, Any]) -> None:
    """Resume the paused run with the decision; 409 when the window closed or it moved on."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(UUID(run_id), run_input=run_input)
    except FlowPauseTimeout:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{record.number}: the approval window has closed"
        ) from None
    except NotPausedError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{record.number}: someone else decided it just now"
        ) from None
    except RuntimeError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{record.number}: {exc}") from None
