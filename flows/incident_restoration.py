"""Incident restoration: diagnose, remediate, verify over SSH; then resolve, or escalate.

Runs for an incident whose CI and symptom have a runbook. The runbook's steps run inside a
Prefect transaction, so a failed verification rolls back what remediation changed; a per-host
concurrency slot keeps two flows from acting on one host; a per-service budget stops
automatic remediation that keeps recurring and calls a human instead. An incident triage
linked to a known error runs that known error's workaround, resolves with the `workaround`
code, and the known error counts whether its workaround worked.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, tags
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.transactions import transaction

from flows.runbooks import runbooks
from flows.runbooks.free_disk_space import disk_ok
from inventory.models import Estate
from itsm.problems import KnownError
from itsm.records import Incident, IncidentUpdate
from itsm.timeline import render_timeline
from opsflow.errors import OpsError, PermanentError
from tasks.concurrency import host_slot
from tasks.events import emit_incident_event
from tasks.inventory import read_estate
from tasks.notify import notify_on_call
from tasks.problems import read_known_error, record_workaround_outcome
from tasks.records import (
    CLAIMABLE_STATES,
    change_incident,
    claim_incident,
    open_store,
    read_incident,
    spend_remediation,
    write_worklog,
)
from tasks.services import verify_restored

ACTOR = "incident-restoration"


class RestorationError(PermanentError):
    """Restoration could not proceed or did not restore the service."""


@flow(name="incident-restoration", flow_run_name="restore-{incident}")
def incident_restoration(incident: str, verify_deadline_s: float = 20.0) -> str:
    """Restore the service an incident is about, and resolve the incident or escalate it.

    Args:
        incident: the incident's id or number (INC0000001).
        verify_deadline_s: how long the health check may take to pass after remediation.

    Returns the incident's state afterwards.
    """
    logger = get_run_logger()
    record = claim_incident(incident, ACTOR)
    if record.state not in CLAIMABLE_STATES:
        logger.info("%s is %s: nothing to restore", record.number, record.state)
        return record.state
    estate = read_estate()
    try:
        _restore(estate, record, verify_deadline_s, _workaround_of(record))
    except OpsError as exc:
        logger.warning("%s: escalating: %s", record.number, exc)
        record = _escalate(estate, record, str(exc))
        emit_incident_event(record.id, "escalated")
    else:
        record = read_incident(str(record.id))
        emit_incident_event(record.id, "resolved")
    _publish_timeline(record)
    return record.state


def _workaround_of(record: Incident) -> KnownError | None:
    """The known error whose workaround is this incident's runbook, if triage linked one."""
    if record.known_error_id is None:
        return None
    known_error = read_known_error(record.known_error_id)
    return known_error if known_error.workaround == record.runbook else None


def _restore(
    estate: Estate, record: Incident, verify_deadline_s: float, workaround: KnownError | None
) -> None:
    runbook = runbooks().get(record.runbook or "")
    if runbook is None:
        raise RestorationError(f"no runbook for {record.number} (runbook {record.runbook!r})")
    try:
        host = estate.host(record.host or "")
        service = estate.service(record.service or "")
    except KeyError as exc:
        raise RestorationError(f"the incident's CI is not in the estate: {exc}") from None
    budget = estate.settings.remediation_budget
    if spend_remediation(service.name, host.name, record.id, budget) is None:
        raise RestorationError(
            f"remediation budget spent: {budget} automatic remediations of {service.name} "
            "in the last hour"
        )
    started = datetime.now(UTC)
    with host_slot(host.name), tags(f"host:{host.name}"):
        note = f"runbook {runbook.name} started on {host.name}"
        if workaround is not None:
            note += f" as the workaround of {workaround.number}"
        write_worklog(record.id, ACTOR, note)
        try:
            with transaction() as txn:
                txn.set("incident_id", record.id)
                diagnosis = runbook.diagnose(host, service)
                write_worklog(record.id, ACTOR, f"diagnosis: {diagnosis.summary}")
                remediation = runbook.remediate(host, service)
                write_worklog(record.id, ACTOR, "remediation: " + "; ".join(remediation.actions))
                health = verify_restored(host, service, verify_deadline_s)
                detail = health.detail
                if runbook.verify_disk:
                    ok, detail = disk_ok(host, service)
                    if not ok:
                        raise RestorationError(f"verification failed: {detail}")
        except Exception:
            if workaround is not None:
                record_workaround_outcome(workaround.id, record.id, worked=False)
            raise
    restored_in = (datetime.now(UTC) - started).total_seconds()
    write_worklog(record.id, ACTOR, f"verified: {detail}")
    change_incident(
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
        counted = record_workaround_outcome(workaround.id, record.id, worked=True)
        write_worklog(
            record.id,
            ACTOR,
            f"{counted.number}'s workaround has worked {counted.times_worked} of "
            f"{counted.times_applied} times",
        )


def _escalate(estate: Estate, record: Incident, reason: str) -> Incident:
    team_name = record.assignment_group or estate.settings.default_team
    team = estate.team(team_name)
    write_worklog(record.id, ACTOR, f"escalated to {team_name}: {reason}")
    record = change_incident(
        record.id,
        IncidentUpdate(
            state="In Progress",
            assignment_group=team_name,
            assigned_to=team.on_call if team else None,
        ),
        ACTOR,
    )
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
        write_worklog(record.id, ACTOR, f"paged {paged}")
    except Exception as exc:
        write_worklog(record.id, ACTOR, f"paging failed: {exc}")
    return record


def _publish_timeline(record: Incident) -> None:
    store = open_store()
    create_markdown_artifact(
        key=f"incident-{record.number.lower()}",
        markdown=render_timeline(
            store.get_incident(str(record.id)),
            store.worklog(record.id),
            store.audit_trail("incident", record.id),
        ),
        description=f"Timeline of {record.number}",
    )


if __name__ == "__main__":
    import sys

    incident_restoration(sys.argv[1])
