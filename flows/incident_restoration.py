"""Incident restoration: diagnose, remediate, verify over SSH; then resolve, or escalate.

Runs for an incident whose CI and symptom have a runbook. The runbook's steps run inside a
Prefect transaction, so a failed verification rolls back what remediation changed; a per-host
concurrency slot keeps two flows from acting on one host; a per-service budget stops
automatic remediation that keeps recurring and calls a human instead. An incident triage
linked to a known error runs that known error's workaround, resolves with the `workaround`
code, and the known error counts whether its workaround worked.

Only what acts on hosts (diagnose, remediate, verify, page) runs as Prefect tasks: the
record keeping is plain calls, each audited in the records with this flow run's id, because
a task run costs the closed loop tens of milliseconds it has not got.

Every restoration ends with the incident Resolved or escalated, whatever fails: the run
leases its incident in the transaction that claims it (so one restoration at a time acts on
an incident), renews the lease while it works and gives it back only once the outcome is
recorded; an unexpected error or a crash escalates through the flow's hooks; a run whose
process died leaves its lease to lapse, and a desk takes the restoration over
(`desk.runners.restorations`). A run that stalled longer than its lease may have lost it to such a
takeover: it asks before it remediates, escalates or resolves, and steps aside if so. An
escalated incident belongs to its on-call: no restoration claims it again.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from prefect import Flow, flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.transactions import transaction
from prometheus_client import Counter

from opsflow.errors import OpsError, PermanentError
from opsflow.flows.runbooks import find_runbook
from opsflow.flows.runbooks.free_disk_space import disk_ok
from opsflow.inventory.models import Estate
from opsflow.itsm.problems import KnownError
from opsflow.itsm.records import CLAIMABLE_STATES, Incident, IncidentUpdate, left_to_automation
from opsflow.itsm.store.leases import restoration_lease
from opsflow.itsm.store.records import open_records
from opsflow.itsm.timeline import render_timeline
from opsflow.settings import get_settings
from opsflow.tasks.concurrency import SLOT_WAIT_S, host_slot
from opsflow.tasks.events import emit_incident_event
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.notify import notify_on_call
from opsflow.tasks.problems import read_known_error, record_workaround_outcome
from opsflow.tasks.records import (
    change_incident,
    claim_incident,
    current_flow_run_id,
    read_incident,
    spend_remediation,
    write_worklog,
)
from opsflow.tasks.services import verify_restored
from opsflow.tasks.untagged import untagged

ACTOR = "incident-restoration"

RESTORATIONS = Counter(
    "opsflow_restorations",
    "Restorations this process finished, by outcome: resolved; escalated (the runbook could "
    "not restore); failed (the run failed or crashed, and its hook escalated); stepped-aside "
    "(a person or another restoration took the incident on meanwhile).",
    ["outcome"],
)
for _outcome in ("resolved", "escalated", "failed", "stepped-aside"):
    RESTORATIONS.labels(outcome=_outcome)


class RestorationError(PermanentError):
    """Restoration could not proceed or did not restore the service."""


def run_holder(flow_run_id: str | None) -> str:
    """Who holds an incident's restoration lease for the run `flow_run_id` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{flow_run_id}"


def escalate_unfinished(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """Failure and crash hook: escalate an incident the run left unrestored.

    Whatever went wrong (a host-slot timeout, a database error, an interrupt), the incident
    must not stay In Progress with nobody told. The hook claims the incident again with the
    run's lease, so it does nothing when the incident was resolved or escalated meanwhile
    or another restoration has taken it over; if even this fails, the lease lapses and a
    desk takes the restoration over. The estate is the last good one this process read, so
    a broken estate file does not leave the on-call unpaged.
    """
    holder = flow_run.parameters.get("lease_holder") or run_holder(str(flow_run.id))
    leases = open_records().leases
    claim = leases.claim_restoration(
        flow_run.parameters["incident"],
        holder,
        get_settings().lease_seconds,
        ACTOR,
        str(flow_run.id),
    )
    if not claim.claimed:
        return
    reason = f"restoration run {flow_run.name} {str(state.name).lower()}: {state.message}"
    try:
        estate = read_estate.fn()
    except OpsError as exc:
        reason += f" (and the estate cannot be read: {exc})"
        estate = None
    record = _escalate(estate, claim.incident, reason)
    RESTORATIONS.labels(outcome="failed").inc()
    leases.release(restoration_lease(record.id), holder)
    _announce(record, "escalated")


@flow(
    name="incident-restoration",
    flow_run_name="restore-{incident}",
    persist_result=False,
    on_failure=[escalate_unfinished],
    on_crashed=[escalate_unfinished],
)
def incident_restoration(
    incident: str,
    verify_deadline_s: float = 20.0,
    slot_wait_s: float = SLOT_WAIT_S,
    lease_holder: str | None = None,
) -> str:
    """Restore the service an incident is about, and resolve the incident or escalate it.

    Args:
        incident: the incident's id or number (INC0000001).
        verify_deadline_s: how long the health check may take to pass after remediation.
        slot_wait_s: how long to wait for the host's slot while another flow acts on it.
        lease_holder: who holds the incident's restoration lease for this run; a desk that
            took a stopped restoration over passes its own, by default it is this run.

    Returns the incident's state afterwards.
    """
    logger = get_run_logger()
    holder = lease_holder or run_holder(current_flow_run_id())
    claim = claim_incident.fn(incident, ACTOR, holder)
    record = claim.incident
    if not claim.claimed:
        if left_to_automation(record):
            logger.info(
                "%s is being restored by %s: not twice at once", record.number, claim.holder
            )
        elif record.state in CLAIMABLE_STATES:
            logger.info("%s is assigned to %s: left to them", record.number, record.assigned_to)
        else:
            logger.info("%s is %s: nothing to restore", record.number, record.state)
        return record.state
    leases = open_records().leases
    lease = restoration_lease(record.id)
    with leases.renewing(lease, holder, get_settings().lease_seconds), untagged():
        estate = None
        change = None
        try:
            estate = read_estate.fn()
            restored = _restore(
                estate, record, holder, verify_deadline_s, slot_wait_s, _workaround_of(record)
            )
        except OpsError as exc:
            if _lease_kept(record, holder, f"not escalated ({exc})"):
                logger.warning("%s: escalating: %s", record.number, exc)
                record = _escalate(estate, record, str(exc))
                change = "escalated"
            else:
                record = read_incident.fn(str(record.id))
        else:
            record = read_incident.fn(str(record.id))
            change = "resolved" if restored else None
    leases.release(lease, holder)
    RESTORATIONS.labels(outcome=change or "stepped-aside").inc()
    with untagged():
        _announce(record, change)
    return record.state


def _workaround_of(record: Incident) -> KnownError | None:
    """The known error whose workaround is this incident's runbook, if triage linked one."""
    if record.known_error_id is None:
        return None
    known_error = read_known_error.fn(record.known_error_id)
    return known_error if known_error.workaround == record.runbook else None


def _restore(
    estate: Estate,
    record: Incident,
    holder: str,
    verify_deadline_s: float,
    slot_wait_s: float,
    workaround: KnownError | None,
) -> bool:
    """Run the incident's runbook and resolve it, as long as `holder` holds its lease; False
    when it needed nothing any more or was left to another restoration."""
    try:
        runbook = find_runbook(estate, record.runbook or "", record.number)
    except ValueError as exc:
        raise RestorationError(f"runbook {record.runbook} cannot run: {exc}") from None
    if runbook is None:
        raise RestorationError(f"no runbook for {record.number} (runbook {record.runbook!r})")
    if not record.host or not record.service:
        raise RestorationError(f"{record.number} names no host or no service to restore")
    try:
        service, host = estate.service_on(record.service, record.host)
    except KeyError as exc:
        raise RestorationError(f"{record.number}'s CI cannot be restored: {exc.args[0]}") from None
    with host_slot(host.name, slot_wait_s):
        current = read_incident.fn(str(record.id))
        if not left_to_automation(current):
            became: str = current.state
            if current.state in CLAIMABLE_STATES:
                became = f"assigned to {current.assigned_to}"
            write_worklog.fn(
                record.id, ACTOR, f"{became} while waiting for {host.name}'s slot: runbook not run"
            )
            return False
        if not _lease_kept(record, holder, f"runbook not run after waiting for {host.name}'s slot"):
            return False
        budget = estate.settings.remediation_budget
        if spend_remediation.fn(service.name, host.name, record.id, budget) is None:
            raise RestorationError(
                f"remediation budget spent: {budget} automatic remediations of {service.name} "
                "in the last hour"
            )
        started = datetime.now(UTC)
        note = f"runbook {runbook.name} started on {host.name}"
        if workaround is not None:
            note += f" as the workaround of {workaround.number}"
        write_worklog.fn(record.id, ACTOR, note)
        try:
            with transaction() as txn:
                txn.set("incident_id", record.id)
                diagnosis = runbook.diagnose(host, service)
                write_worklog.fn(record.id, ACTOR, f"diagnosis: {diagnosis.summary}")
                remediation = runbook.remediate(host, service)
                write_worklog.fn(record.id, ACTOR, "remediation: " + "; ".join(remediation.actions))
                health = verify_restored(host, service, verify_deadline_s)
                detail = health.detail
                if runbook.verify_disk:
                    ok, detail = disk_ok(host, service)
                    if not ok:
                        raise RestorationError(f"verification failed: {detail}")
                if runbook.verify is not None:
                    checked = runbook.verify(host, service, verify_deadline_s)
                    detail += f"; {checked}" if checked else ""
        except Exception:
            if workaround is not None:
                record_workaround_outcome.fn(workaround.id, record.id, worked=False)
            raise
    restored_in = (datetime.now(UTC) - started).total_seconds()
    write_worklog.fn(record.id, ACTOR, f"verified: {detail}")
    if not _lease_kept(record, holder, "not resolved"):
        return False
    change_incident.fn(
        record.id,
        IncidentUpdate(
            state="Resolved",
            resolution_code="workaround" if workaround else "auto-remediated",
            resolution_notes=(
                (f"workaround of {workaround.number}: " if workaround else "")
                + f"{runbook.name}: {diagnosis.summary}; "
                + "; ".join(remediation.actions)
                + f"; verified in {restored_in:.1f}s ({detail})"
            ),
        ),
        ACTOR,
    )
    if workaround is not None:
        counted = record_workaround_outcome.fn(workaround.id, record.id, worked=True)
        write_worklog.fn(
            record.id,
            ACTOR,
            f"{counted.number}'s workaround has worked {counted.times_worked} of "
            f"{counted.times_applied} times",
        )
    return True


def _lease_kept(record: Incident, holder: str, instead: str) -> bool:
    """Whether `holder` still holds the incident's restoration lease (renewing it).

    A run that stalled longer than its lease (a database outage, a long wait for the host's
    slot) may have lost it to a desk that took the restoration over; then this run must
    not act on the incident: it says in the worklog what it did `instead` and steps aside.
    """
    leases = open_records().leases
    lease = restoration_lease(record.id)
    if leases.holds(lease, holder, get_settings().lease_seconds):
        return True
    taker = leases.holder(lease, datetime.now(UTC)) or "nobody"
    note = f"restoration lease lost to {taker}: {instead}, left to its holder"
    write_worklog.fn(record.id, ACTOR, note)
    get_run_logger().warning("%s: %s", record.number, note)
    return False


def _escalate(estate: Estate | None, record: Incident, reason: str) -> Incident:
    """Hand the incident to its team's on-call: worklog, assignment, page (when the estate
    is readable: without it the team and its pager are unknown)."""
    default_team = estate.settings.default_team if estate else None
    team_name = record.assignment_group or default_team
    team = estate.team(team_name) if estate and team_name else None
    write_worklog.fn(record.id, ACTOR, f"escalated to {team_name or 'no team'}: {reason}")
    record = change_incident.fn(
        record.id,
        IncidentUpdate(
            state="In Progress",
            assignment_group=team_name,
            assigned_to=team.on_call if team else None,
        ),
        ACTOR,
    )
    if estate is None or team_name is None:
        write_worklog.fn(record.id, ACTOR, "paging failed: no estate to find the on-call in")
        return record
    try:
        paged = notify_on_call(
            estate,
            team_name,
            subject=f"[opsflow] {record.number} P{record.priority} needs a human: {record.summary}",
            body=(
                f"{record.number} ({record.symptom} of {record.service} on {record.host}) "
                f"could not be restored automatically: {reason}"
            ),
        )
        write_worklog.fn(record.id, ACTOR, f"paged {paged}")
    except Exception as exc:
        write_worklog.fn(record.id, ACTOR, f"paging failed: {exc}")
    return record


def _announce(record: Incident, change: str | None) -> None:
    """Tell Prefect's event feed what changed and publish the incident's timeline.

    The outcome is recorded and the lease given back before this: a failure here is
    logged, never escalated again.
    """
    try:
        if change is not None:
            emit_incident_event(record.id, change)
        _publish_timeline(record)
    except Exception:
        get_run_logger().exception("%s: announcing %s failed", record.number, change)


def _publish_timeline(record: Incident) -> None:
    store = open_records()
    create_markdown_artifact(
        key=f"incident-{record.number.lower()}",
        markdown=render_timeline(
            store.incidents.get(str(record.id)),
            store.worklog.entries(record.id),
            store.audit.trail("incident", record.id),
        ),
        description=f"Timeline of {record.number}",
    )


if __name__ == "__main__":
    import sys

    incident_restoration(sys.argv[1])
