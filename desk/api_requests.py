"""The desk's service requests: the catalog, submitting, following, approving and rejecting.

A new request is recorded and answered at once (201); its `request-fulfilment` flow runs in
a thread of the desk process (`RequestRunner`), so it starts in milliseconds instead of
waiting for a runner to poll for a deployment run. An approval is authenticated here,
checked against the item's policy (never the requester), signed with the key in the
`opsflow-approval-key` Secret block, and sent to the paused run as its run input; the flow
records the decision and the desk answers once it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel

from desk.auth import Reader, may_read, sees_everything
from desk.lease_keeper import LeaseKeeper, TakeOver, crash_runs
from inventory.models import CatalogItem, Estate, Person
from itsm.approvals import ApprovalRefusedError, check_approver
from itsm.catalog import InvalidRequestError, NotEntitledError, input_choices, validate_request
from itsm.leases import LeaseClaim, Leases
from itsm.records import AuditEntry
from itsm.request_store import RequestQuotaError, RequestStore
from itsm.requests import (
    CARRIED_STATES,
    PENDING_STATES,
    Decision,
    DecisionIn,
    RequestCreate,
    ServiceRequest,
    decision_signature,
)
from itsm.store import RecordNotFoundError
from opsflow.settings import get_settings

logger = logging.getLogger("opsflow.desk.requests")

router = APIRouter(prefix="/api/v1", tags=["requests"])

PAUSE_WAIT_S = 10.0
"""How long an approval waits for a just-submitted request's run to reach its pause."""
DECISION_WAIT_S = 10.0
"""How long an approval waits for the resumed run to record the decision before answering."""


class RequestRunner:
    """Runs each request's fulfilment flow in its own daemon thread of the desk process.

    One thread per request, not a fixed pool: a request waiting for approval holds its
    thread while paused, and a small pool would let a few pending approvals block every
    standard request behind them. `max_running` bounds the threads instead.

    Every request it runs is leased in the store while it runs; requests whose desk stopped
    (its lease lapsed) are taken over here: their dead run is marked Crashed and a new one
    carries the request on, approval window and all.
    """

    def __init__(
        self,
        requests: RequestStore,
        run: Callable[[str], Any] | None = None,
        max_running: int = 200,
        lease_s: float | None = None,
    ) -> None:
        self._requests = requests
        self._run = run or _run_fulfilment
        self._changed = threading.Condition()
        self.running = 0
        self.max_running = max_running
        self.leases = LeaseKeeper(
            Leases(requests.store),
            LEASE_PREFIX,
            lease_s or get_settings().lease_seconds,
            self._take_over,
        )

    def start(self, create: Callable[[LeaseClaim], ServiceRequest]) -> ServiceRequest | None:
        """Record a new request with `create` and start fulfilling it.

        `create` records the request and takes this desk's lease on it in one transaction,
        so a desk that dies right after leaves a leased request for another to take over,
        never one carried by nobody. None, with nothing recorded, when `max_running` runs
        are in flight.
        """
        if not self._reserve():
            return None
        try:
            record = create(self.leases.claim())
        except BaseException:
            self._unreserve()
            raise
        self.leases.adopt(_lease_name(record.id))
        self._launch(record)
        return record

    def keep(self) -> None:
        """Start renewing this desk's leases and taking over requests whose desk stopped."""
        self.leases.start()

    def stop(self) -> None:
        """Stop renewing: the requests still running here are for the next desk to carry."""
        self.leases.stop()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request runs here (e.g. before shutting down); False at the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.running == 0, timeout_s)

    def _take_over(self, name: str, holder: str) -> TakeOver:
        """Carry on a request whose desk stopped: crash its dead runs, audit, run it again."""
        record = self._requests.get(int(name.removeprefix(LEASE_PREFIX)))
        if record.state not in CARRIED_STATES:
            return "finished"  # closed before its desk could give the lease back
        if not self._reserve():
            return "later"
        now = datetime.now(UTC)
        crashed = crash_runs(
            record.flow_run_ids, f"{holder} stopped while carrying {record.number}"
        )
        self._requests.note(
            record.id,
            ACTOR,
            "taken_over",
            {
                "from": holder,
                "by": self.leases.holder,
                "state": record.state,
                "crashed_runs": crashed,
            },
            now,
        )
        if record.state == "fulfilling":
            # Fulfilment flows are idempotent: doing it again finishes what was interrupted.
            record = self._requests.move(
                record.id, "approved", ACTOR, now, decided_at=record.decided_at
            )
        logger.warning("took over %s (%s) from %s", record.number, record.state, holder)
        self._launch(record)
        return "carried"

    def _reserve(self) -> bool:
        with self._changed:
            if self.running >= self.max_running:
                return False
            self.running += 1
            return True

    def _unreserve(self) -> None:
        with self._changed:
            self.running -= 1
            self._changed.notify_all()

    def _launch(self, record: ServiceRequest) -> None:
        thread = threading.Thread(
            target=self._work, args=(record,), name=f"request-{record.number}", daemon=True
        )
        thread.start()

    def _work(self, record: ServiceRequest) -> None:
        try:
            self._run(record.number)
        except Exception:
            logger.exception("request fulfilment of %s failed", record.number)
        finally:
            try:
                self.leases.release(_lease_name(record.id))
            finally:
                self._unreserve()


ACTOR = "service-desk"
LEASE_PREFIX = "request:"


def _lease_name(request_id: int) -> str:
    return f"{LEASE_PREFIX}{request_id}"


def _run_fulfilment(number: str) -> Any:
    from flows.request_fulfillment import fulfil_request

    return fulfil_request(number)


def request_runner(request: Request) -> RequestRunner:
    """The app's runner (`app.state.request_runner`), which `build_desk` provides."""
    return request.app.state.request_runner


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
    fulfil_within_minutes: float
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
        fulfil_within_minutes=item.fulfil_within_minutes,
        may_request=item.requesters.admits(person),
    )


def _store(request: Request) -> RequestStore:
    return RequestStore(request.app.state.store)


def _detail(requests: RequestStore, id_or_number: str | int) -> RequestDetail:
    record = requests.get(id_or_number)
    return RequestDetail(**record.model_dump(), audit=requests.audit_trail(record.id))


def _approvable_items(estate: Estate, person: Person) -> list[str]:
    """The catalog items whose requests `person` may approve (their own excepted)."""
    return [
        item.name
        for item in estate.catalog
        if item.approval.policy != "none" and item.approval.approvers.admits(person)
    ]


def _visible(
    requests: RequestStore, id_or_number: str, estate: Estate, person: Person
) -> ServiceRequest:
    """The request if `person` may read it; otherwise 404, exactly as if there were none."""
    record = requests.get(id_or_number)
    if may_read(person, record.requester, record.item, _approvable_items(estate, person)):
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
def list_catalog(request: Request, person: Reader) -> list[CatalogEntry]:
    """Every catalog item, its inputs with the estate's current choices, and its approval."""
    estate: Estate = request.app.state.estate()
    return [_entry(item, estate, person) for item in estate.catalog]


@router.post("/requests", status_code=status.HTTP_201_CREATED)
def submit_request(body: RequestCreate, request: Request, person: Reader) -> RequestDetail:
    """Ask for a catalog item; refused with every bad field named (422) and nothing recorded."""
    estate: Estate = request.app.state.estate()
    try:
        item, _, inputs = validate_request(estate, body.item, body.inputs, person.name)
    except InvalidRequestError as exc:
        raise _unprocessable(exc) from None
    except NotEntitledError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    runner = request_runner(request)
    requests = _store(request)

    def create(lease: LeaseClaim) -> ServiceRequest:
        return requests.create(
            item.name,
            inputs,
            person.name,
            item.approval.policy,
            person.name,
            datetime.now(UTC),
            lease=lease,
            max_open=estate.settings.max_open_requests_per_person,
        )

    try:
        record = runner.start(create)
    except RequestQuotaError as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc)) from None
    if record is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"not recorded: the desk is running its limit of {runner.max_running} requests; "
            "submit again later",
            {"Retry-After": "60"},
        )
    return _detail(requests, record.id)


@router.get("/requests")
def list_requests(
    request: Request,
    person: Reader,
    state: Annotated[list[str] | None, Query()] = None,
    requester: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ServiceRequest]:
    """Service requests, newest first, filtered by state or requester.

    Operators see every request; others their own and those they may approve.
    """
    estate: Estate = request.app.state.estate()
    everything = sees_everything(person)
    return _store(request).list(
        state=state,
        requester=requester,
        limit=limit,
        visible_to=None if everything else person.name,
        items=() if everything else _approvable_items(estate, person),
    )


@router.get("/requests/{request_id}")
def show_request(request_id: str, request: Request, person: Reader) -> RequestDetail:
    """One request by id or number (REQ0000001), with its audit trail (404 if not yours)."""
    requests = _store(request)
    record = _visible(requests, request_id, request.app.state.estate(), person)
    return _detail(requests, record.id)


@router.post("/requests/{request_id}/approve")
def approve_request(
    request_id: str, request: Request, person: Reader, body: DecisionIn | None = None
) -> RequestDetail:
    """Approve a request waiting for approval: the policy's approvers only, never the requester."""
    return _decide(request, request_id, person, "approve", (body or DecisionIn()).comment)


@router.post("/requests/{request_id}/reject")
def reject_request(
    request_id: str, request: Request, person: Reader, body: DecisionIn | None = None
) -> RequestDetail:
    """Reject a request waiting for approval: the policy's approvers only, never the requester."""
    return _decide(request, request_id, person, "reject", (body or DecisionIn()).comment)


def _decide(
    request: Request, request_id: str, person: Person, decision: Decision, comment: str
) -> RequestDetail:
    """Check the approver, wait for the run's pause, resume it with a signed decision."""
    requests = _store(request)
    estate: Estate = request.app.state.estate()
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
    from flows.request_fulfillment import approval_key, decision_sent

    key = approval_key(create=True) or b""
    run_input = {
        "decision": decision,
        "comment": comment,
        "approver": person.name,
        "signature": decision_signature(key, record.id, run_id, decision, person.name, comment),
    }
    _resume(record, run_id, run_input)
    decision_sent(run_id)  # the run waits in this desk's process, most often: wake it now
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


def _paused(requests: RequestStore, record: ServiceRequest) -> ServiceRequest:
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
