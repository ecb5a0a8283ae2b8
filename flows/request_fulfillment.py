"""Request fulfillment: validate against the catalog, approve where policy asks, fulfill, tell,
close.

`fulfill_request` carries one stored service request to a final state. When its catalog item
asks for an approver, the run pauses (a Prefect Paused state waiting for `ApprovalDecision`)
until the desk resumes it with a decision signed by a key only opsflow holds, or until the
approval window closes and the item's `on_timeout` policy decides (reject, or escalate to
the approvers once and then expire). A decision typed into the Prefect UI carries no
identity in OSS Prefect, so it counts only if the estate sets `ui_approvals`.

`submit_request` is the same process started from the Prefect UI's typed form: it
validates, records the request under a lease of its own, and runs `fulfill_request` as a
subflow (requests submitted to the desk are carried by the workers, `desk.runners.fulfillments`).

A run waiting for a decision costs nothing per second: a desk in the same process wakes it
at once (`decision_sent`), and one shared check per process every RESUME_CHECK_S finds the
runs resumed from elsewhere (a desk in another process, the Prefect UI), however many are
waiting (`flows.paused_runs`). Prefect's own `pause_flow_run` polls the API once a second per
paused run instead.

One module, over 500 lines, on purpose: one deployable process, whose two flows share the
request's records (read and moved through tasks), the approval (signed decisions, the
approval window and its timeout policy) and fulfillment; prefect.yaml's entrypoints name its
flows here.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID, uuid4

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.logging import get_run_logger
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync
from pydantic import Field

from opsflow.flows.fulfillment import FulfillmentResult, fulfillment_flows
from opsflow.flows.paused_runs import ResumeWaiters
from opsflow.inventory.models import CatalogItem, Estate
from opsflow.itsm.approvals import ApprovalRefusedError, check_approver
from opsflow.itsm.catalog import InvalidRequestError, validate_inputs, validate_request
from opsflow.itsm.markdown import md_text
from opsflow.itsm.requests import (
    PENDING_STATES,
    Attachment,
    InputValue,
    RequestState,
    ServiceRequest,
    signature_valid,
)
from opsflow.itsm.store.leases import LeaseClaim
from opsflow.itsm.store.records import open_records
from opsflow.itsm.store.requests import LEASE_PREFIX
from opsflow.settings import get_settings
from opsflow.tasks.events import publish_request_change
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.notify import person_block, send_notification
from opsflow.tasks.records import current_flow_run_id

ACTOR = "request-fulfillment"
APPROVAL_KEY_BLOCK = "opsflow-approval-key"
"""The Prefect Secret block holding the key the desk signs approval decisions with."""
UI_APPROVER = "prefect-ui"


class ApprovalDecision(RunInput):
    """A decision on a paused service request, from the desk (signed) or the Prefect UI."""

    decision: Literal["approve", "reject"] = Field(description="Approve or reject the request.")
    comment: str = Field(default="", max_length=2000, description="Why; kept in the audit.")
    approver: str | None = Field(
        default=None, description="Set by the service desk; leave empty in the Prefect UI."
    )
    signature: str | None = Field(
        default=None, description="The service desk's signature; leave empty in the Prefect UI."
    )


RESUMES = ResumeWaiters()


def decision_sent(run_id: str) -> None:
    """The desk resumed `run_id` with a decision: wake it now if it waits in this process."""
    RESUMES.wake(UUID(run_id))


def approval_key(create: bool = False) -> bytes | None:
    """The approval signing key from its Secret block; made on first use when `create`."""
    try:
        # Prefect types load() as the block or its coroutine; from sync code it is the block.
        return str(cast(Secret, Secret.load(APPROVAL_KEY_BLOCK)).get()).encode()
    except ValueError:
        if not create:
            return None
    with contextlib.suppress(ValueError):  # another desk made it first: use theirs
        Secret(value=secrets.token_urlsafe(32)).save(APPROVAL_KEY_BLOCK, overwrite=False)
    return str(cast(Secret, Secret.load(APPROVAL_KEY_BLOCK)).get()).encode()


# -- tasks: every read and change of the record goes through one, audited with this run ----


@task(cache_policy=NONE, timeout_seconds=60)
def read_request(request: str) -> ServiceRequest:
    """One service request by id or number."""
    return open_records().requests.get(request)


@task(cache_policy=NONE, timeout_seconds=60)
def create_request(
    item: str,
    inputs: dict[str, InputValue],
    requester: str,
    approval_policy: str,
    actor: str,
    lease_holder: str,
) -> ServiceRequest:
    """Record a submitted request whose inputs the catalog has validated, leased to
    `lease_holder` in the same transaction (so no worker takes it up meanwhile)."""
    record = open_records().requests.create(
        item,
        inputs,
        requester,
        approval_policy,
        actor=actor,
        now=datetime.now(UTC),
        flow_run_id=current_flow_run_id(),
        lease=LeaseClaim(LEASE_PREFIX, lease_holder, get_settings().lease_seconds),
    )
    publish_request_change(record, "submitted")
    return record


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="move_request[{target}]")
def move_request(
    request_id: int, target: RequestState, actor: str = ACTOR, **changes: Any
) -> ServiceRequest:
    """Move the request through its state machine, audited with this run, and tell
    Prefect's event feed (`opsflow.request.<target>`)."""
    record = open_records().requests.move(
        request_id, target, actor, datetime.now(UTC), current_flow_run_id(), **changes
    )
    publish_request_change(record, target)
    return record


@task(cache_policy=NONE, timeout_seconds=60)
def update_request(request_id: int, **changes: Any) -> ServiceRequest:
    """Change fields of the request other than its state, audited with this run."""
    return open_records().requests.update(
        request_id, ACTOR, datetime.now(UTC), current_flow_run_id(), **changes
    )


@task(cache_policy=NONE, timeout_seconds=60)
def link_request_run(request_id: int, flow_run_id: str) -> ServiceRequest:
    """Record a flow run on the request, so the record leads to the run in the UI."""
    return open_records().requests.link_flow_run(request_id, flow_run_id, ACTOR, datetime.now(UTC))


@task(cache_policy=NONE, timeout_seconds=60)
def attach_files(request_id: int, attachments: list[Attachment]) -> ServiceRequest:
    """Attach the files a fulfillment produced, with their checksums."""
    return open_records().requests.attach(
        request_id, attachments, ACTOR, datetime.now(UTC), current_flow_run_id()
    )


@task(cache_policy=NONE, timeout_seconds=60, task_run_name="note_request[{action}]")
def note_request(request_id: int, actor: str, action: str, detail: dict[str, Any]) -> None:
    """Audit something that happened to the request without changing it."""
    open_records().requests.note(
        request_id, actor, action, detail, datetime.now(UTC), current_flow_run_id()
    )


@task(cache_policy=NONE, timeout_seconds=60)
def load_approval_key() -> bytes | None:
    """The key desk-signed decisions are checked with; None before the desk made one."""
    return approval_key()


# -- the flows --------------------------------------------------------------------------


@flow(name="request-fulfillment", flow_run_name="fulfill-{request}")
def fulfill_request(request: str) -> str:
    """Carry one service request through approval and fulfillment to a final state.

    Args:
        request: the request's number (REQ0000001) or id.

    Returns the request's state afterwards. A request already past approval or closed is
    left as it is, so running this twice for one request does no harm.
    """
    logger = get_run_logger()
    record = read_request(request)
    if record.state not in (*PENDING_STATES, "approved"):
        logger.info("%s is %s: nothing to do", record.number, record.state)
        return record.state
    run_id = current_flow_run_id()
    if run_id:
        record = link_request_run(record.id, run_id)
    estate = read_estate()
    try:
        item = estate.catalog_item(record.item)
        validate_inputs(item, record.inputs, estate)  # the estate may have changed since
    except (KeyError, InvalidRequestError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        record = move_request(record.id, "failed", outcome=f"no longer valid: {reason}")
    else:
        if record.state in PENDING_STATES:
            record = _decide(estate, item, record)
        if record.state == "approved":
            record = _fulfill(item, record)
    _tell_requester(estate, record)
    publish_request(record)
    logger.info("%s %s: %s", record.number, record.state, record.outcome or "")
    return record.state


@flow(name="submit-service-request", flow_run_name="submit-{item}-for-{requester}")
def submit_request(item: str, inputs: dict[str, Any], requester: str) -> str:
    """Ask for a catalog item on someone's behalf (the Prefect UI's form) and fulfill it.

    Nothing is recorded when the item, the requester or an input is refused; the run fails
    with every problem named. Otherwise the request is recorded and fulfilled as a subflow.

    Args:
        item: the catalog item's name, e.g. request-service-restart.
        inputs: the item's inputs by name, e.g. {"service": "app", "host": "lab02"}.
        requester: the person asking, as people.yaml names them.

    Returns the request's final state.
    """
    estate = read_estate()
    found, person, valid = validate_request(estate, item, inputs, requester)
    # This run carries the request itself, under a lease of its own that it renews, as a
    # worker would: if its process dies, a worker takes the request over once it lapses.
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
    record = create_request(
        found.name,
        valid,
        person.name,
        found.approval.policy,
        actor=f"{UI_APPROVER}:{requester}",
        lease_holder=holder,
    )
    get_run_logger().info("%s submitted for %s", record.number, requester)
    leases, name = open_records().leases, f"{LEASE_PREFIX}{record.id}"
    try:
        with leases.renewing(name, holder, get_settings().lease_seconds):
            return fulfill_request(record.number)
    finally:
        leases.release(name, holder)


# -- approval ---------------------------------------------------------------------------


def _decide(estate: Estate, item: CatalogItem, record: ServiceRequest) -> ServiceRequest:
    """Approve by policy, or wait for a decision until the window closes and policy decides."""
    if item.approval.policy == "none":
        return move_request(
            record.id,
            "approved",
            approver="catalog",
            decision_comment="standard request: pre-approved by the catalog",
        )
    logger = get_run_logger()
    run_id = current_flow_run_id() or ""
    window_s = item.approval.timeout_minutes * 60
    escalated = record.escalated_at is not None
    now = datetime.now(UTC)
    due = now + timedelta(seconds=window_s)
    if record.state == "awaiting-approval" and record.approval_due_at is not None:
        due = record.approval_due_at  # a run taking over after its desk stopped: same window
    deadline = time.monotonic() + (due - now).total_seconds()
    changes: dict[str, Any] = {"approval_run_id": run_id, "approval_due_at": due}
    if record.state == "submitted":
        record = move_request(record.id, "awaiting-approval", **changes)
    else:
        record = update_request(record.id, **changes)
    pauses = 0
    while True:
        remaining = deadline - time.monotonic()
        decision: ApprovalDecision | None = None
        if remaining > 0:
            pauses += 1
            decision = _wait_for_decision(record, item, math.ceil(remaining), pauses)
        if decision is None:
            if item.approval.on_timeout == "escalate" and not escalated:
                escalated = True
                deadline = time.monotonic() + window_s
                now = datetime.now(UTC)
                record = update_request(
                    record.id,
                    escalated_at=now,
                    approval_due_at=now + timedelta(seconds=window_s),
                )
                _escalate(estate, item, record)
                continue
            minutes = f"{item.approval.timeout_minutes:g} minutes"
            if item.approval.on_timeout == "reject":
                return move_request(
                    record.id,
                    "rejected",
                    approver=ACTOR,
                    decision_comment=f"no decision within {minutes}: rejected by policy",
                    outcome=f"rejected: nobody decided within {minutes}",
                )
            return move_request(
                record.id,
                "expired",
                decision_comment=f"no decision within {minutes}, even after escalation",
                outcome=f"expired: nobody decided within {minutes} of escalation",
            )
        approver = _accepted_approver(estate, item, record, decision, run_id)
        if approver is None:
            logger.warning("%s: decision not accepted; waiting for another", record.number)
            continue
        target: RequestState = "approved" if decision.decision == "approve" else "rejected"
        extra = {} if target == "approved" else {"outcome": f"rejected by {approver}"}
        return move_request(
            record.id,
            target,
            actor=approver,
            approver=approver,
            decision_comment=decision.comment,
            **extra,
        )


def _wait_for_decision(
    record: ServiceRequest, item: CatalogItem, timeout_s: int, attempt: int
) -> ApprovalDecision | None:
    """Pause this run until a decision arrives; None when the window closes first."""
    inputs = ", ".join(f"{k}={v}" for k, v in record.inputs.items()) or "no inputs"
    form = ApprovalDecision.with_initial_data(
        description=(
            f"**{record.number}**: {record.requester} asks for **{item.name}** ({inputs}).\n\n"
            f"{item.description}\n\nApprove through the service desk "
            f"(`opsflow request approve {record.number}`); a decision given here counts "
            "only if the estate sets `ui_approvals`."
        )
    )
    try:
        return _pause_for_input(form, timeout_s, f"approval-{attempt}")
    except FlowPauseTimeout:
        _run_again_after_pause_timeout()
        return None


def _pause_for_input(form: type[ApprovalDecision], timeout_s: int, key: str) -> ApprovalDecision:
    """Pause this run for `form`'s input, as `pause_flow_run` does, but wait without polling.

    The Paused state, its timeout and the input form in the Prefect UI are Prefect's own;
    only the wait differs: woken by `decision_sent` or the shared check (`RESUMES`).

    Raises:
        FlowPauseTimeout: nobody resumed the run within `timeout_s`.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("only a flow run can pause for a decision")
    run_id = context.flow_run.id
    proposed: State[None] = Paused(timeout_seconds=timeout_s, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    # Prefect's StateDetails types the keyset as dict[str, str], its Keyset as a TypedDict of
    # the same str keys and values: the stubs disagree, the value is the one Prefect expects.
    proposed.state_details.run_input_keyset = keyset  # type: ignore[assignment]  # see above
    with RESUMES.waiting(run_id) as resumed, get_client(sync_client=True) as client:
        state = propose_state_sync(client, proposed, flow_run_id=run_id)
        if state.is_running():  # this pause happened before and was resumed already
            # RunInput.load() is typed as the input or its coroutine; here, sync, the input.
            return cast(ApprovalDecision, form.load(keyset))
        if not state.is_paused():
            raise RuntimeError(f"the run could not pause: Prefect answered {state.type}")
        form.save(keyset)
        get_run_logger().info("waiting for a decision (key %s)", key)
        woken = resumed.wait(timeout_s)
        run = client.read_flow_run(run_id)  # resumed, or at the very end of the window?
        if run.state is None or not run.state.is_running():
            if not woken:
                raise FlowPauseTimeout("the run was paused and nobody resumed it in time")
            raise RuntimeError(f"the run left its pause as {run.state and run.state.type}")
    return cast(ApprovalDecision, form.load(keyset))


def _run_again_after_pause_timeout() -> None:
    """Set this run Running again: a timed-out pause leaves it Paused, where no task may run.

    The server refuses to leave an expired pause through the usual rules (it would fail the
    run), but here the timeout is an expected outcome the policy handles, so the move is
    forced. This is the flow's own state, not I/O on anything it manages.
    """
    run_id = current_flow_run_id()
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(run_id), Running(), force=True)


def _accepted_approver(
    estate: Estate,
    item: CatalogItem,
    record: ServiceRequest,
    decision: ApprovalDecision,
    run_id: str,
) -> str | None:
    """Who decided, if the decision counts: desk-signed by a valid approver, or UI if allowed."""
    key = load_approval_key()
    detail = {"decision": decision.decision, "comment": decision.comment}
    signed = key is not None and signature_valid(
        key,
        decision.signature,
        record.id,
        run_id,
        decision.decision,
        decision.approver,
        decision.comment,
    )
    if signed and decision.approver:
        person = estate.person(decision.approver)
        try:
            if person is None:
                raise ApprovalRefusedError(f"{decision.approver} is not in the estate")
            check_approver(person, record.requester, item.approval.approvers, record.number)
        except ApprovalRefusedError as exc:
            refused = {**detail, "why": str(exc)}
            note_request(record.id, decision.approver, "decision_refused", refused)
            return None
        return decision.approver
    if estate.settings.ui_approvals:
        if decision.approver:
            detail["claimed_approver"] = decision.approver
        note_request(record.id, UI_APPROVER, "ui_decision_accepted", detail)
        return UI_APPROVER
    why = "unsigned decision (Prefect UI) and the estate does not allow ui_approvals"
    note_request(record.id, UI_APPROVER, "ui_decision_refused", {**detail, "why": why})
    return None


def _escalate(estate: Estate, item: CatalogItem, record: ServiceRequest) -> None:
    """Tell the approvers nobody decided in time; the run waits one more window."""
    blocks: list[str] = []
    for person in estate.people:
        admitted = item.approval.approvers.admits(person)
        if admitted and person.name != record.requester and person.notify_block:
            blocks.append(person.notify_block)
    for name in [*item.approval.approvers.teams, estate.settings.default_team]:
        team = estate.team(name)
        if team and team.notify_block:
            blocks.append(team.notify_block)
    subject = f"[opsflow] {record.number} needs an approver: {record.item} for {record.requester}"
    body = (
        f"Nobody decided on {record.number} ({record.item}, {record.inputs}) within "
        f"{item.approval.timeout_minutes:g} minutes. Approve or reject it: "
        f"opsflow request approve|reject {record.number}"
    )
    _notify(record, list(dict.fromkeys(blocks)), subject, body, "approvers_notified")


# -- fulfillment and closing -------------------------------------------------------------


def _fulfill(item: CatalogItem, record: ServiceRequest) -> ServiceRequest:
    """Run the item's fulfillment (a flow, a declared runbook, a deployment) as a subflow and
    record its outcome, runs and files."""
    parameters: dict[str, Any] = {**item.fulfillment.parameters, **record.inputs}
    if item.fulfillment.deployment is not None:
        return _fulfill_by_deployment(item, record, item.fulfillment.deployment, parameters)
    if item.fulfillment.runbook is not None:
        service, host = parameters.pop("service", None), parameters.pop("host", None)
        parameters = {
            "runbook": item.fulfillment.runbook,
            "service": service,
            "host": host,
            "parameters": parameters,
        }
    name = item.fulfillment.flow or "run-declared-runbook"
    fulfillment = fulfillment_flows().get(name)
    if fulfillment is None:
        return move_request(
            record.id, "failed", outcome=f"fulfillment: no fulfillment flow {name!r}"
        )
    accepted = inspect.signature(fulfillment.fn).parameters
    if "reference" in accepted:
        parameters["reference"] = record.number
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        return move_request(
            record.id,
            "failed",
            outcome=f"fulfillment: {name} takes no parameter {', '.join(unknown)}",
        )
    within_s = item.fulfill_within_minutes * 60
    record = move_request(
        record.id,
        "fulfilling",
        fulfil_due_at=datetime.now(UTC) + timedelta(seconds=within_s),
    )
    state = fulfillment.with_options(timeout_seconds=within_s)(**parameters, return_state=True)
    sub_run = state.state_details.flow_run_id
    if sub_run is not None:
        record = link_request_run(record.id, str(sub_run))
    try:
        result: FulfillmentResult = state.result()
    except Exception as exc:
        get_run_logger().warning("%s: fulfillment failed: %s", record.number, exc)
        what = item.fulfillment.runbook or name
        return move_request(record.id, "failed", outcome=f"{what} failed: {exc}")
    if result.attachments:
        record = attach_files(record.id, result.attachments)
    return move_request(record.id, "fulfilled", outcome=result.summary)


def _fulfill_by_deployment(
    item: CatalogItem, record: ServiceRequest, deployment: str, parameters: dict[str, Any]
) -> ServiceRequest:
    """Run any Prefect deployment with the request's inputs and wait for it to end, within
    the item's fulfillment time; fulfilled when the run completes."""
    within_s = item.fulfill_within_minutes * 60
    record = move_request(
        record.id,
        "fulfilling",
        fulfil_due_at=datetime.now(UTC) + timedelta(seconds=within_s),
    )
    try:
        # Prefect types run_deployment() as the run or its coroutine; from sync code it is the run.
        run = cast(
            FlowRun,
            run_deployment(deployment, parameters=parameters, timeout=within_s, as_subflow=True),
        )
    except Exception as exc:  # no such deployment, parameters it refuses, an unreachable API
        get_run_logger().warning("%s: deployment %s not run: %s", record.number, deployment, exc)
        return move_request(record.id, "failed", outcome=f"deployment {deployment}: {exc}")
    record = link_request_run(record.id, str(run.id))
    state = run.state
    if state is None or not state.is_completed():
        how = str(state.name) if state else "unknown"
        if state is not None and not state.is_final():
            how += f" after {item.fulfill_within_minutes:g} minutes (left running)"
        return move_request(
            record.id, "failed", outcome=f"deployment {deployment} run {run.name}: {how}"
        )
    return move_request(
        record.id, "fulfilled", outcome=f"deployment {deployment} run {run.name} completed"
    )


def _tell_requester(estate: Estate, record: ServiceRequest) -> None:
    """Notify the requester through their block, else their team's; audit either way."""
    block = person_block(estate, record.requester)
    subject = f"[opsflow] {record.number} {record.item}: {record.state}"
    lines = [f"{record.number} ({record.item}, {record.inputs}) is {record.state}."]
    if record.approver:
        lines.append(f"Decided by {record.approver}: {record.decision_comment or '-'}")
    if record.outcome:
        lines.append(f"Outcome: {record.outcome}")
    lines += [f"Attached: {a.name} sha256 {a.sha256} at {a.path}" for a in record.attachments]
    _notify(record, [block] if block else [], subject, "\n".join(lines), "requester_notified")


def _notify(
    record: ServiceRequest, blocks: list[str], subject: str, body: str, action: str
) -> None:
    """Send through each block; a failure is audited, never fatal to the request."""
    if not blocks:
        get_run_logger().warning("%s: no notification block to reach anyone", record.number)
        note_request(record.id, ACTOR, "notification_skipped", {"subject": subject})
        return
    for block in blocks:
        try:
            send_notification(block, subject, body)
        except Exception as exc:
            get_run_logger().warning("%s: notifying %s failed: %s", record.number, block, exc)
            note_request(
                record.id, ACTOR, "notification_failed", {"block": block, "error": str(exc)}
            )
        else:
            note_request(record.id, ACTOR, action, {"block": block, "subject": subject})


@task(cache_policy=NONE, timeout_seconds=60)
def publish_request(record: ServiceRequest) -> None:
    """A markdown artifact with the request's record and audit trail, for the Prefect UI."""
    trail = open_records().requests.audit_trail(record.id)
    lines = [
        f"# {record.number}: {record.item} ({record.state})",
        "",
        f"- requester: {md_text(record.requester)}",
        f"- inputs: {md_text(record.inputs)}",
        f"- approver: {md_text(record.approver or '-')} "
        f"({md_text(record.decision_comment or '-')})",
        f"- outcome: {md_text(record.outcome or '-')}",
        *(f"- attachment: {md_text(a.name)} sha256 {a.sha256}" for a in record.attachments),
        "",
        "| at | actor | action |",
        "|---|---|---|",
        *(f"| {e.at:%H:%M:%S} | {md_text(e.actor)} | {md_text(e.action)} |" for e in trail),
    ]
    create_markdown_artifact(
        key=f"request-{record.number.lower()}",
        markdown="\n".join(lines),
        description=f"Service request {record.number}",
    )


if __name__ == "__main__":
    import sys

    fulfill_request(sys.argv[1])
