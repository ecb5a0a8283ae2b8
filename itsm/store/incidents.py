"""Incidents in the records: reading them, and changing them through the state machine.

A change goes through `lifecycle.apply_update` (or is the caller's, a link to a flow run)
and is written as the incident's next version with its audit row (`INCIDENTS`, a
`record_table.RecordTable`), an If-Match from the API checked against the version. Triage
opens incidents and counts events on them in `itsm.store.correlation`; the worklog is
`itsm.store.worklog`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    or_,
    select,
)

from opsflow.itsm.lifecycle import apply_update
from opsflow.itsm.priority import SlaTargets
from opsflow.itsm.records import (
    INCIDENT_NUMBERING,
    INCIDENT_STATES,
    OPEN_STATES,
    Incident,
    IncidentUpdate,
    left_to_automation,
)
from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata, require_aware
from opsflow.itsm.store.record_store import UpdateStore
from opsflow.itsm.store.record_table import RecordTable, versioned_table

incidents = versioned_table(
    "incidents",
    Column("host", String(255)),
    Column("service", String(255)),
    Column("symptom", String(128), nullable=False),
    Column("summary", Text, nullable=False),
    Column("correlation_key", String(512), nullable=False),
    Column("impact", Integer, nullable=False),
    Column("urgency", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("hold_reason", Text),
    Column("resolution_code", String(32)),
    Column("resolution_notes", Text),
    Column("assignment_group", String(255)),
    Column("assigned_to", String(255)),
    Column("reported_by", String(255)),
    Column("runbook", String(255)),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("responded_at", UtcDateTime),
    Column("resolved_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("respond_due", UtcDateTime, nullable=False),
    Column("resolve_due", UtcDateTime, nullable=False),
    Column("paused_s", Float, nullable=False, default=0.0),
    Column("hold_started_at", UtcDateTime),
    Column("event_count", Integer, nullable=False, default=0),
    Column("last_event_at", UtcDateTime),
    Column("time_to_restore_s", Float),
    Column("flow_run_ids", Json, nullable=False),
    Column("problem_id", Id),
    Column("known_error_id", Id),
    CheckConstraint("impact BETWEEN 1 AND 3 AND urgency BETWEEN 1 AND 3", name="ck_incidents_iu"),
    CheckConstraint("priority BETWEEN 1 AND 5", name="ck_incidents_priority"),
    states=INCIDENT_STATES,
)
# At most one open incident per correlation key, enforced by the database even when
# several triage runs or desk replicas open the same incident at once.
Index(
    "uq_incidents_open_key",
    incidents.c.correlation_key,
    unique=True,
    sqlite_where=incidents.c.state.in_(OPEN_STATES),
    postgresql_where=incidents.c.state.in_(OPEN_STATES),
)
Index("ix_incidents_state_priority", incidents.c.state, incidents.c.priority)
Index("ix_incidents_host", incidents.c.host)
Index("ix_incidents_service", incidents.c.service)
Index("ix_incidents_resolved_at", incidents.c.resolved_at)

incident_reports = Table(
    "incident_reports",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("reporter", String(255), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)
"""Who reported each incident, first or later, so everyone who did finds it in /me."""
Index("ix_incident_reports_reporter", incident_reports.c.reporter, incident_reports.c.incident_id)


INCIDENTS = RecordTable(incidents, Incident, "incident", numbering=INCIDENT_NUMBERING)
"""Incidents as versioned, audited records."""


class Incidents(UpdateStore[Incident, IncidentUpdate]):
    """The incidents of `db`; safe to share between threads.

    Args:
        db: the records database.
        sla: response and resolution targets, to move due dates when the priority changes.
    """

    def __init__(self, db: Database, sla: SlaTargets | None = None) -> None:
        super().__init__(db, INCIDENTS, self._apply_update)
        self.sla = sla or SlaTargets()

    def open_for_key(self, key: str) -> Incident | None:
        """The open incident with this correlation key, if there is one."""
        with self.db.read() as conn:
            return open_for_key(conn, key)

    def list(
        self,
        state: Sequence[str] | None = None,
        host: str | None = None,
        service: str | None = None,
        limit: int = 100,
        offset: int = 0,
        reported_by: str | None = None,
    ) -> list[Incident]:
        """Incidents matching every filter given, newest first; `reported_by` matches whoever
        opened the incident and everyone who reported it after them."""
        where = []
        if reported_by is not None:
            reports = select(incident_reports.c.incident_id).where(
                incident_reports.c.reporter == reported_by
            )
            where.append(or_(incidents.c.reported_by == reported_by, incidents.c.id.in_(reports)))
        return self.page(
            *where, limit=limit, offset=offset, state=state, host=host, service=service
        )

    def opened_since(self, since: datetime) -> builtins.list[Incident]:
        """Every incident opened at or after `since`, oldest first: a problem review's window."""
        require_aware(since, "since")
        query = (
            select(incidents)
            .where(incidents.c.opened_at >= since)
            .order_by(incidents.c.opened_at, incidents.c.id)
        )
        return self.read(query)

    def reported_by(self, incident_id: int, person: str) -> bool:
        """Whether `person` opened the incident or reported it after whoever did."""
        reports = select(incident_reports.c.incident_id).where(
            incident_reports.c.incident_id == incident_id, incident_reports.c.reporter == person
        )
        query = select(incidents.c.id).where(
            incidents.c.id == incident_id,
            or_(incidents.c.reported_by == person, incidents.c.id.in_(reports)),
        )
        with self.db.read() as conn:
            return conn.execute(query).first() is not None

    def restore_times(self) -> builtins.list[float]:
        """Time to restore, in seconds, of every incident that has been resolved."""
        query = select(incidents.c.time_to_restore_s).where(
            incidents.c.time_to_restore_s.is_not(None)
        )
        with self.db.read() as conn:
            return [float(value) for value in conn.execute(query).scalars()]

    def count_open_by_priority(self) -> dict[int, int]:
        """How many incidents are open at each priority, 1 to 5 (zeros included)."""
        query = (
            select(incidents.c.priority, func.count())
            .where(incidents.c.state.in_(OPEN_STATES))
            .group_by(incidents.c.priority)
        )
        counts = dict.fromkeys(range(1, 6), 0)
        with self.db.read() as conn:
            for level, count in conn.execute(query):
                counts[int(level)] = int(count)
        return counts

    def _apply_update(self, incident: Incident, update: IncidentUpdate, now: datetime) -> Incident:
        """`lifecycle.apply_update` with this store's SLA targets, which move the due dates
        when the priority changes."""
        return apply_update(incident, update, now, self.sla)

    def claim(
        self,
        incident_id: int | str,
        actor: str,
        now: datetime,
        flow_run_id: str | None,
        hold: Callable[[Connection, Incident], bool],
    ) -> tuple[Incident, bool]:
        """Take an incident on for a flow run: In Progress if New, linked to the run.

        `hold(conn, incident)` runs first in the same transaction (a restoration takes its
        lease there), so an incident is never claimed without what `hold` took, nor the
        reverse. Returns the incident and whether it was claimed; one not left to automation
        (`left_to_automation`: not in CLAIMABLE_STATES, or escalated to a person), or that
        `hold` refuses, is returned unchanged.
        """
        require_aware(now, "now")
        claimed = False

        def guard(conn: Connection, before: Incident) -> bool:
            nonlocal claimed
            claimed = left_to_automation(before) and hold(conn, before)
            return claimed

        def change(before: Incident) -> Incident:
            after = before
            if before.state == "New":
                after = apply_update(before, IncidentUpdate(state="In Progress"), now, self.sla)
            if flow_run_id and flow_run_id not in after.flow_run_ids:
                after = after.model_copy(
                    update={"flow_run_ids": [*after.flow_run_ids, flow_run_id], "updated_at": now}
                )
            return after

        incident = INCIDENTS.modify(
            self.db, incident_id, change, actor, now, flow_run_id, guard=guard
        )
        return incident, claimed


def open_for_key(conn: Connection, key: str, lock: bool = False) -> Incident | None:
    """The open incident with correlation key `key`, if any, locked when `lock`."""
    query = select(incidents).where(
        incidents.c.correlation_key == key, incidents.c.state.in_(OPEN_STATES)
    )
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return None if row is None else Incident.model_validate(dict(row))
