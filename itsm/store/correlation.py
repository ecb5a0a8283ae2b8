"""Triage's writes to incidents: open one for an event or a report, or count it on the open one.

At most one incident is open per correlation key, enforced by a partial unique index even
when several triage runs or desks open the same incident at once: the loser of that race
joins the winner's incident. The events triage sends to an incident are marked in the same
transaction (`EventLink`), so an incident is never seen without its events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, insert
from sqlalchemy.exc import IntegrityError

from opsflow.itsm.priority import SlaTargets, priority
from opsflow.itsm.records import OPEN_STATES, Incident, IncidentCreate
from opsflow.itsm.store.db import Database, require_aware
from opsflow.itsm.store.errors import ConcurrentUpdateError
from opsflow.itsm.store.events import EventLink, link_events
from opsflow.itsm.store.incidents import INCIDENTS, incident_reports, open_for_key
from opsflow.itsm.store.record_table import RETRIES
from opsflow.itsm.store.worklog import add_entry

CorrelationOutcome = Literal["opened", "correlated", "adopted"]


@dataclass(frozen=True)
class Correlation:
    """Where an event or report went: a new incident, an open one, or an open one that takes
    the runbook the event calls for because no automation was working on it yet."""

    incident: Incident
    outcome: CorrelationOutcome


class Correlator:
    """Opens incidents and counts events on them in `db`, for triage and for reports.

    Args:
        db: the records database.
        sla: response and resolution targets that set a new incident's due dates.
    """

    def __init__(self, db: Database, sla: SlaTargets | None = None) -> None:
        self.db = db
        self.sla = sla or SlaTargets()

    def open_or_correlate(
        self,
        create: IncidentCreate,
        event_time: datetime,
        actor: str,
        flow_run_id: str | None = None,
        now: datetime | None = None,
        link: EventLink | None = None,
    ) -> tuple[Incident, bool]:
        """Add an event to the open incident with the same correlation key, or open one.

        Returns (incident, created); see `correlate`, which this calls without adopting
        runbooks or recording a report.
        """
        found = self.correlate(create, event_time, actor, flow_run_id, now, link)
        return found.incident, found.outcome == "opened"

    def correlate(
        self,
        create: IncidentCreate,
        event_time: datetime,
        actor: str,
        flow_run_id: str | None = None,
        now: datetime | None = None,
        link: EventLink | None = None,
        adopt_runbook: bool = False,
        report: str | None = None,
    ) -> Correlation:
        """Add an event to the open incident with the same correlation key, or open one.

        A new incident is New, opened at `event_time`, with priority and due dates from
        impact, urgency and the SLA targets. `now` (default `event_time`) stamps the change;
        `link` marks the event triaged to the incident in the same transaction. With
        `adopt_runbook`, an open incident still New and without a runbook (a person's report,
        say) takes `create.runbook` ("adopted"), so the evidence of an alert starts the
        automation a report alone does not. With `report`, `actor` is recorded as a reporter
        of the incident and `report` (their words) goes to its worklog, in the same write.
        If another writer opens the same incident at the same moment, the unique index
        refuses ours and we join theirs.
        """
        require_aware(event_time, "event_time")
        now = now or event_time
        require_aware(now, "now")
        key = create.key
        for _attempt in range(RETRIES):
            try:
                with self.db.write() as conn:
                    found = open_for_key(conn, key, lock=True)
                    outcome: CorrelationOutcome = "opened"
                    if found is not None:
                        adopt = (
                            adopt_runbook
                            and create.runbook is not None
                            and found.runbook is None
                            and found.state == "New"
                        )
                        incident = self._count_events(
                            conn,
                            found,
                            1,
                            event_time,
                            actor,
                            now,
                            flow_run_id,
                            runbook=create.runbook if adopt else None,
                        )
                        if incident is None:
                            continue
                        outcome = "adopted" if adopt else "correlated"
                    else:
                        incident = self._insert_incident(
                            conn, create, key, event_time, now, actor, flow_run_id
                        )
                    link_events(conn, link, incident.id, flow_run_id)
                    if report is not None:
                        _record_report(conn, incident.id, actor, report, now)
                    return Correlation(incident, outcome)
            except IntegrityError as exc:
                if not _is_open_key_violation(exc):
                    raise
                # A concurrent writer opened it first: the next attempt correlates to theirs.
        raise ConcurrentUpdateError("incident", key, RETRIES)

    def correlate_more(
        self,
        incident_id: int,
        count: int,
        last_event_at: datetime,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        link: EventLink | None = None,
    ) -> Incident | None:
        """Count `count` more events on an open incident in one write (a storm's repeats).

        Returns the incident, or None when it is no longer open, so the caller correlates
        those events one by one instead. `link` marks those events triaged in the same write.
        """
        require_aware(last_event_at, "last_event_at")
        require_aware(now, "now")
        for _attempt in range(RETRIES):
            with self.db.write() as conn:
                found = INCIDENTS.fetch(conn, incident_id, lock=True)
                if found.state not in OPEN_STATES:
                    return None
                after = self._count_events(
                    conn, found, count, last_event_at, actor, now, flow_run_id
                )
                if after is not None:
                    link_events(conn, link, after.id, flow_run_id)
                    return after
        raise ConcurrentUpdateError("incident", str(incident_id), RETRIES)

    def _count_events(
        self,
        conn: Connection,
        found: Incident,
        count: int,
        last_event_at: datetime,
        actor: str,
        now: datetime,
        flow_run_id: str | None,
        runbook: str | None = None,
    ) -> Incident | None:
        """Add `count` events to an open incident, audited; None if another writer beat us.

        With `runbook`, the incident takes it in the same write (audited as adopted).
        """
        changes: dict[str, Any] = {
            "event_count": found.event_count + count,
            "last_event_at": max(found.last_event_at or last_event_at, last_event_at),
            "updated_at": max(found.updated_at, now),
        }
        if runbook is not None:
            changes["runbook"] = runbook
        action = "runbook_adopted" if runbook is not None else "correlated"
        after = found.model_copy(update=changes)
        return INCIDENTS.try_write(conn, found, after, actor, now, flow_run_id, action)

    def _insert_incident(
        self,
        conn: Connection,
        create: IncidentCreate,
        key: str,
        event_time: datetime,
        now: datetime,
        actor: str,
        flow_run_id: str | None,
    ) -> Incident:
        """Insert a New incident, reported by `actor`, audited as opened; return it as stored."""
        level = priority(create.impact, create.urgency)
        respond_due, resolve_due = self.sla.due_dates(level, event_time)
        values: dict[str, Any] = {
            "host": create.host,
            "service": create.service,
            "symptom": create.symptom,
            "summary": create.summary,
            "correlation_key": key,
            "impact": create.impact,
            "urgency": create.urgency,
            "priority": level,
            "state": "New",
            "assignment_group": create.assignment_group,
            "reported_by": actor,
            "runbook": create.runbook,
            "opened_at": event_time,
            "updated_at": now,
            "respond_due": respond_due,
            "resolve_due": resolve_due,
            "paused_s": 0.0,
            "event_count": 1,
            "last_event_at": event_time,
            "flow_run_ids": [flow_run_id] if flow_run_id else [],
        }
        return INCIDENTS.insert(conn, values, actor, now, "opened", flow_run_id)


def _record_report(
    conn: Connection, incident_id: int, reporter: str, text: str, at: datetime
) -> None:
    """Record `reporter` as a reporter of the incident and their words in its worklog."""
    conn.execute(insert(incident_reports).values(incident_id=incident_id, reporter=reporter, at=at))
    entry = add_entry(conn, incident_id, reporter, text, at)
    INCIDENTS.note(conn, incident_id, reporter, "reported", None, entry, at)


def _is_open_key_violation(exc: IntegrityError) -> bool:
    message = str(exc.orig)
    return "uq_incidents_open_key" in message or "incidents.correlation_key" in message
