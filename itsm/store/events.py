"""Events in the records: intake's inserts, triage's reads and decisions, failures and retries.

Intake stores events as fast as the database takes them (one statement per group commit,
deduplicated by the database); triage reads the oldest pending ones in batches and records
its decision on each, with an audit row holding the decision, not a copy of the event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from opsflow.itsm.records import Event, EventClass, EventIn, FailedEvent
from opsflow.itsm.store.audit import audit_entry, write_audit, write_audit_of
from opsflow.itsm.store.db import CHUNK, Database, Id, Json, UtcDateTime, metadata, require_aware
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.event_intake import EventIntake

TRIAGE_ACTOR = "event-triage"


@dataclass(frozen=True)
class EventLink:
    """Triage's decision on the events that go to the incident it opens or counts them on.

    Written in the same transaction as the incident, so an incident is never seen without
    its events, and a triage interrupted in between cannot count the same events twice.
    """

    event_ids: Sequence[int]
    event_class: EventClass
    rule: str | None
    at: datetime


events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("dedup_key", String(64), nullable=False, unique=True),
    Column("source", String(64), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("host", String(255)),
    Column("service", String(255)),
    Column("labels", Json, nullable=False),
    Column("annotations", Json, nullable=False),
    Column("summary", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime),
    Column("received_at", UtcDateTime, nullable=False),
    Column("event_class", String(16)),
    Column("rule", String(255)),
    Column("incident_id", Id, ForeignKey("incidents.id")),
    Column("triaged_at", UtcDateTime),
)
# Triage reads the untriaged events in id order; this index holds only those.
Index(
    "ix_events_pending",
    events.c.id,
    sqlite_where=events.c.triaged_at.is_(None),
    postgresql_where=events.c.triaged_at.is_(None),
)
Index("ix_events_incident", events.c.incident_id)

event_failures = Table(
    "event_failures",
    metadata,
    Column("event_id", Id, ForeignKey("events.id"), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
)
"""Events triage could not handle, with the reason; the event itself is marked triaged."""


TRIAGE_BYTE_BUDGET = 16 * 1024 * 1024
"""Most bytes of labels, annotations and summaries one triage batch loads (at least one event)."""


@dataclass(frozen=True)
class TriageBacklog:
    """Events waiting for triage (and when the oldest arrived), and events that failed it."""

    pending: int
    oldest_received_at: datetime | None
    failed: int


class Events:
    """The events of `db`: stored by intake, decided by triage; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._intake = EventIntake(db, events)

    def store(self, events_in: Sequence[EventIn], received_at: datetime) -> tuple[int, int]:
        """Store a batch of events in one transaction, skipping ones already stored.

        Returns (stored, duplicates); when it returns, the new events are committed.
        """
        return self.store_groups([events_in], received_at)[0]

    def store_groups(
        self, groups: Sequence[Sequence[EventIn]], received_at: datetime
    ) -> list[tuple[int, int]]:
        """Store the events of several requests in one transaction; (stored, duplicates) each.

        One commit for many requests is what lets the intake keep up with many small
        webhooks (group commit). An event already stored, by an earlier group too, counts
        as a duplicate. When it returns, the new events are committed.
        """
        require_aware(received_at, "received_at")
        return self._intake.store_groups(groups, received_at)

    def pending(self, limit: int = 500, max_bytes: int = TRIAGE_BYTE_BUDGET) -> list[Event]:
        """The oldest events not triaged yet, in the order they were stored.

        At most `limit` events and, beyond the first, at most `max_bytes` of labels,
        annotations and summaries: a batch of large events stays within memory. Sizes are
        measured in the database, so oversized rows are never loaded to be counted.
        """
        pending = events.c.triaged_at.is_(None)
        size = (
            func.length(cast(events.c.labels, Text))
            + func.length(cast(events.c.annotations, Text))
            + func.length(events.c.summary)
        )
        sizes = select(events.c.id, size).where(pending).order_by(events.c.id).limit(limit)
        with self.db.read() as conn:
            last_id, total = None, 0
            for event_id, event_size in conn.execute(sizes):
                total += int(event_size or 0)
                if last_id is not None and total > max_bytes:
                    break
                last_id = event_id
            if last_id is None:
                return []
            query = select(events).where(pending, events.c.id <= last_id).order_by(events.c.id)
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [Event.model_validate(dict(row)) for row in rows]

    def any_pending(self) -> bool:
        """Whether any event waits for triage (one row of the pending index, however many)."""
        with self.db.read() as conn:
            return (
                conn.execute(
                    select(events.c.id).where(events.c.triaged_at.is_(None)).limit(1)
                ).first()
                is not None
            )

    def backlog(self) -> TriageBacklog:
        """How many events wait for triage, since when, and how many triage could not handle."""
        waiting = select(func.count(), func.min(events.c.received_at)).where(
            events.c.triaged_at.is_(None)
        )
        failed = select(func.count()).select_from(event_failures)
        with self.db.read() as conn:
            count, oldest = conn.execute(waiting).one()
            failures = conn.execute(failed).scalar_one()
        return TriageBacklog(int(count), oldest, int(failures))

    def mark_failed(
        self,
        failures: Sequence[tuple[int, str]],
        at: datetime,
        actor: str = TRIAGE_ACTOR,
        flow_run_id: str | None = None,
    ) -> int:
        """Record that triage could not handle these events (event id, reason), with audit rows.

        A failed event leaves the pending set, so the events after it are triaged; its reason
        stays with it for operators (`failed`, `/metrics`). Events already triaged are
        left alone. Returns how many events were marked.
        """
        require_aware(at, "at")
        reasons = {event_id: reason[:2000] for event_id, reason in failures}
        if not reasons:
            return 0
        with self.db.write() as conn:
            ids = _untriaged(conn, list(reasons))
            if not ids:
                return 0
            conn.execute(
                update(events).where(events.c.id == bindparam("b_id")),
                [{"b_id": event_id, "triaged_at": at} for event_id in ids],
            )
            conn.execute(
                insert(event_failures),
                [{"event_id": event_id, "at": at, "reason": reasons[event_id]} for event_id in ids],
            )
            write_audit(
                conn,
                [
                    _decision(at, actor, "failed", i, flow_run_id, {"reason": reasons[i]})
                    for i in ids
                ],
            )
        return len(ids)

    def retry_failed(self, event_ids: Sequence[int] | None, at: datetime, actor: str) -> list[int]:
        """Put failed events back before triage (all of them when `event_ids` is None), once
        what made them fail is mended (an estate file, a rule); the ids put back, audited."""
        require_aware(at, "at")
        query = select(event_failures.c.event_id).order_by(event_failures.c.event_id)
        if event_ids is not None:
            query = query.where(event_failures.c.event_id.in_(list(event_ids)))
        with self.db.write() as conn:
            ids = list(conn.execute(query.with_for_update()).scalars())
            if not ids:
                return []
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                conn.execute(delete(event_failures).where(event_failures.c.event_id.in_(chunk)))
                conn.execute(update(events).where(events.c.id.in_(chunk)).values(triaged_at=None))
            write_audit(conn, [_decision(at, actor, "retried", i, None, {}) for i in ids])
        return ids

    def failed(self, limit: int = 100) -> list[FailedEvent]:
        """Events triage could not handle, newest first, each with its reason."""
        query = (
            select(events, event_failures.c.at.label("failed_at"), event_failures.c.reason)
            .join(event_failures, event_failures.c.event_id == events.c.id)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [FailedEvent.model_validate(dict(row)) for row in rows]

    def get(self, event_id: int) -> Event:
        """One stored event."""
        with self.db.read() as conn:
            row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
        if row is None:
            raise RecordNotFoundError("event", event_id)
        return Event.model_validate(dict(row))

    def with_fingerprint(self, fingerprint: str) -> list[Event]:
        """Every stored event of one alert (firing and resolved), oldest first."""
        query = select(events).where(events.c.fingerprint == fingerprint).order_by(events.c.id)
        with self.db.read() as conn:
            return [Event.model_validate(dict(row)) for row in conn.execute(query).mappings()]

    def of_incident(self, incident_id: int, limit: int = 100) -> list[Event]:
        """The most recent events triage linked to an incident, newest first."""
        query = (
            select(events)
            .where(events.c.incident_id == incident_id)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [Event.model_validate(dict(row)) for row in rows]

    def mark_triaged(
        self,
        updates: Sequence[tuple[int, EventClass, str | None, int | None]],
        at: datetime,
        actor: str = TRIAGE_ACTOR,
        flow_run_id: str | None = None,
    ) -> int:
        """Record triage decisions (event id, class, rule, incident id) with their audit rows.

        Events already triaged are left alone, so running the same decisions twice changes
        nothing the second time. Returns how many events were marked.
        """
        require_aware(at, "at")
        decisions = {event_id: (cls, rule, inc) for event_id, cls, rule, inc in updates}
        if not decisions:
            return 0
        with self.db.write() as conn:
            return record_decisions(conn, decisions, at, actor, flow_run_id)

    def counts_by_class(self) -> dict[str, int]:
        """How many events are stored per triage class; "pending" for those not triaged yet
        and "failed" for those triage could not handle."""
        classes = (
            select(events.c.event_class, func.count())
            .where(events.c.event_class.is_not(None))
            .group_by(events.c.event_class)
        )
        pending = select(func.count()).where(events.c.triaged_at.is_(None))
        failed = select(func.count()).select_from(event_failures)
        with self.db.read() as conn:
            counts = {str(cls): int(count) for cls, count in conn.execute(classes)}
            waiting = int(conn.execute(pending).scalar_one())
            failures = int(conn.execute(failed).scalar_one())
        if waiting:
            counts["pending"] = waiting
        if failures:
            counts["failed"] = failures
        return counts


def record_decisions(
    conn: Connection,
    decisions: Mapping[int, tuple[EventClass, str | None, int | None]],
    at: datetime,
    actor: str,
    flow_run_id: str | None,
) -> int:
    """Write triage decisions on events not yet triaged, with their audit rows; count them.

    The audit row holds the decision (class, rule, incident), not copies of the event:
    the event row itself is the record of what arrived. Events sharing a decision (a storm's
    repeats) are written by one UPDATE and one INSERT ... SELECT per chunk, not row by row:
    per-row statements made triage cost more CPU per alert than the intake that stored it.
    """
    ids = _untriaged(conn, list(decisions))
    by_decision: dict[tuple[EventClass, str | None, int | None], list[int]] = {}
    for event_id in ids:
        by_decision.setdefault(decisions[event_id], []).append(event_id)
    for (event_class, rule, incident_id), group in by_decision.items():
        decision = {"event_class": event_class, "rule": rule, "incident_id": incident_id}
        for start in range(0, len(group), CHUNK):
            chosen = _id_among(conn, events.c.id, group[start : start + CHUNK])
            conn.execute(update(events).where(chosen).values(**decision, triaged_at=at))
            write_audit_of(
                conn,
                events.c.id,
                chosen,
                at,
                actor,
                "event.triaged",
                "event",
                decision,
                flow_run_id,
            )
    return len(ids)


def _untriaged(conn: Connection, ids: list[int]) -> list[int]:
    """Those of `ids` not triaged yet, locked for this transaction, in id order."""
    found: list[int] = []
    for start in range(0, len(ids), CHUNK):
        query = select(events.c.id).where(
            _id_among(conn, events.c.id, ids[start : start + CHUNK]),
            events.c.triaged_at.is_(None),
        )
        found.extend(conn.execute(query.order_by(events.c.id).with_for_update()).scalars())
    return sorted(found)


def _id_among(conn: Connection, column: Column, ids: list[int]) -> ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL one array parameter rather than one parameter per id."""
    if conn.dialect.name == "postgresql":
        return column == any_(literal(ids, postgresql.ARRAY(BigInteger)))
    return column.in_(ids)


def link_events(
    conn: Connection, link: EventLink | None, incident_id: int, flow_run_id: str | None
) -> None:
    """Record that triage sent `link`'s events to the incident, in the incident's transaction."""
    if link is None:
        return
    decision = (link.event_class, link.rule, incident_id)
    decisions = dict.fromkeys(link.event_ids, decision)
    record_decisions(conn, decisions, link.at, TRIAGE_ACTOR, flow_run_id)


def _decision(
    at: datetime,
    actor: str,
    action: str,
    event_id: int,
    flow_run_id: str | None,
    decision: dict[str, Any],
) -> dict[str, Any]:
    """The audit of a decision on one event: the decision only, not a copy of the event (the
    event row itself is the record of what arrived)."""
    return audit_entry(at, actor, f"event.{action}", "event", event_id, None, decision, flow_run_id)
