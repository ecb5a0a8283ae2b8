"""The records store: events, incidents, worklog and audit in SQLite or PostgreSQL.

SQLAlchemy Core, not the ORM, because intake writes thousands of events a second. One
engine per `Store`, a connection per call, so one `Store` serves many threads. Every change
writes its audit row in the same transaction as the change itself.

On SQLite every writing transaction starts with BEGIN IMMEDIATE: writers queue on the
database lock (busy timeout 10 s) instead of failing when a read turns into a write, and
readers carry on alongside them thanks to WAL. On PostgreSQL the same code relies on row
locks, the partial unique index and the version column.

Durability: SQLite runs in WAL with synchronous=NORMAL, so a committed write survives the
process crashing, but a power cut or kernel crash may undo the last few commits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator

from opsflow.errors import PermanentError, TransientError
from opsflow.itsm import event_notices
from opsflow.itsm.lifecycle import apply_update
from opsflow.itsm.migrations import upgrade_engine
from opsflow.itsm.priority import SlaTargets, priority
from opsflow.itsm.records import (
    INCIDENT_NUMBERING,
    INCIDENT_STATES,
    OPEN_STATES,
    AuditEntry,
    Event,
    EventClass,
    EventIn,
    FailedEvent,
    Incident,
    IncidentCreate,
    IncidentUpdate,
    WorklogEntry,
    bound_event_times,
    left_to_automation,
)
from opsflow.settings import get_settings

_RETRIES = 5
_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound-variable limit


class RecordNotFoundError(PermanentError, LookupError):
    """No record of that type has that id or number."""

    def __init__(self, record_type: str, key: int | str):
        self.record_type = record_type
        self.key = key
        super().__init__(f"no {record_type} {key}")


class StaleVersionError(PermanentError, ValueError):
    """The caller changed a record from a version that is no longer current; re-read it first."""

    def __init__(self, record_type: str, record_id: int, expected: int, current: int):
        self.expected = expected
        self.current = current
        super().__init__(
            f"{record_type} {record_id} is at version {current}, not {expected}; "
            "re-read it and apply the change again"
        )


class ConcurrentUpdateError(TransientError):
    """The record's version changed under us on every attempt; trying again may succeed."""

    def __init__(self, record_type: str, key: int | str, attempts: int):
        super().__init__(f"{record_type} {key} changed concurrently {attempts} times in a row")


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


class StoreConfigError(PermanentError, ValueError):
    """The database URL names a backend the store does not support."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no offset, so we add it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes and store UTC (without offset on SQLite, which drops it)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; the store takes timezone-aware ones")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored instant as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
_Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite's rowid alias must be INTEGER

metadata = MetaData()

incidents = Table(
    "incidents",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
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
    Column("flow_run_ids", _Json, nullable=False),
    Column("problem_id", _Id),
    Column("known_error_id", _Id),
    Column("version", Integer, nullable=False, default=1),
    CheckConstraint(INCIDENT_STATES.sql_check(), name="ck_incidents_state"),
    CheckConstraint("impact BETWEEN 1 AND 3 AND urgency BETWEEN 1 AND 3", name="ck_incidents_iu"),
    CheckConstraint("priority BETWEEN 1 AND 5", name="ck_incidents_priority"),
    sqlite_autoincrement=True,  # never reuse an id, so never reuse an incident number
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

events = Table(
    "events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("dedup_key", String(64), nullable=False, unique=True),
    Column("source", String(64), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("host", String(255)),
    Column("service", String(255)),
    Column("labels", _Json, nullable=False),
    Column("annotations", _Json, nullable=False),
    Column("summary", Text, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime),
    Column("received_at", UtcDateTime, nullable=False),
    Column("event_class", String(16)),
    Column("rule", String(255)),
    Column("incident_id", _Id, ForeignKey("incidents.id")),
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

worklog = Table(
    "worklog",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("incident_id", _Id, ForeignKey("incidents.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("author", String(255), nullable=False),
    Column("text", Text, nullable=False),
)
Index("ix_worklog_incident", worklog.c.incident_id, worklog.c.id)

audit = Table(
    "audit",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("record_type", String(32), nullable=False),
    Column("record_id", _Id, nullable=False),
    Column("before", _Json),
    Column("after", _Json),
    Column("flow_run_id", String(64)),
)
Index("ix_audit_record", audit.c.record_type, audit.c.record_id, audit.c.id)

event_failures = Table(
    "event_failures",
    metadata,
    Column("event_id", _Id, ForeignKey("events.id"), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
)
"""Events triage could not handle, with the reason; the event itself is marked triaged."""

incident_reports = Table(
    "incident_reports",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("incident_id", _Id, ForeignKey("incidents.id"), nullable=False),
    Column("reporter", String(255), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)
"""Who reported each incident, first or later, so everyone who did finds it in /me."""
Index("ix_incident_reports_reporter", incident_reports.c.reporter, incident_reports.c.incident_id)

remediations = Table(
    "remediations",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("service", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("incident_id", _Id, ForeignKey("incidents.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)
Index("ix_remediations_service_at", remediations.c.service, remediations.c.at)

_EVENT_INSERT_COLUMNS = (
    "dedup_key",
    "source",
    "fingerprint",
    "status",
    "host",
    "service",
    "labels",
    "annotations",
    "summary",
    "occurred_at",
    "ends_at",
    "received_at",
)
_INCIDENT_COLUMNS = [c.name for c in incidents.columns if c.name != "id"]
_PRUNE_BATCH = _CHUNK  # rows deleted per transaction, so pruning never holds the lock long

_PG_INSERT_EVENTS = (
    "INSERT INTO events (dedup_key, source, fingerprint, status, host, service, labels,"
    " annotations, summary, occurred_at, ends_at, received_at)"
    " SELECT *, %b FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::text[]::jsonb[], %b::text[]::jsonb[], %b::text[], %b::timestamptz[],"
    " %b::timestamptz[])"
    " ON CONFLICT (dedup_key) DO NOTHING"
    " RETURNING dedup_key, pg_notify(%b, '')::text"
)
"""New events on PostgreSQL, however many: received_at, one array per column (binary), then
the channel on which workers are told on commit (`itsm.event_notices`: one notice per
transaction)."""

TRIAGE_BYTE_BUDGET = 16 * 1024 * 1024
"""Most bytes of labels, annotations and summaries one triage batch loads (at least one event)."""

CorrelationOutcome = Literal["opened", "correlated", "adopted"]


@dataclass(frozen=True)
class Correlation:
    """Where an event or report went: a new incident, an open one, or an open one that takes
    the runbook the event calls for because no automation was working on it yet."""

    incident: Incident
    outcome: CorrelationOutcome


@dataclass(frozen=True)
class TriageBacklog:
    """Events waiting for triage (and when the oldest arrived), and events that failed it."""

    pending: int
    oldest_received_at: datetime | None
    failed: int


@dataclass(frozen=True)
class PruneResult:
    """What a retention clean-up deleted."""

    events: int
    audit_rows: int


def default_database_url() -> str:
    """The configured records database, else SQLite under the opsflow home."""
    settings = get_settings()
    return settings.database_url or f"sqlite:///{settings.home}/opsflow.db"


class Store:
    """The ITIL records in one database; safe to share between threads.

    Opening it brings the database to the newest schema (`itsm.migrations`), every record
    table included, whichever record modules this process uses; `schema` says what changed.

    Args:
        url: SQLAlchemy URL (`sqlite:///path`, `postgresql+psycopg://…`); by default
            `OPSFLOW_DATABASE_URL`, else `opsflow.db` in the opsflow home.
        sla: response and resolution targets used to set due dates.
    """

    def __init__(self, url: str | None = None, sla: SlaTargets | None = None):
        self.url = url or default_database_url()
        self.sla = sla or SlaTargets()
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreConfigError(
                f"records store supports sqlite and postgresql, not {self.dialect!r}"
            )
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # More pooled connections than the desk has worker threads (anyio's 40): with 8,
            # every request beyond the 8th opened and closed a connection (and its PRAGMAs).
            self._engine = create_engine(self.url, pool_size=48, max_overflow=16)
            _configure_sqlite(self._engine)
            self._insert_event: Any = str(
                sqlite.insert(events)
                .values({name: bindparam(name) for name in _EVENT_INSERT_COLUMNS})
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .compile(dialect=self._engine.dialect)
            )
        else:
            self._engine = create_engine(self.url, pool_pre_ping=True)
            self._insert_event = _PG_INSERT_EVENTS
        self._writer = self._engine.execution_options(opsflow_write=True)
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else nullcontext()
        try:
            self.schema = upgrade_engine(self._writer)
        except BaseException:
            self._engine.dispose()  # a store that cannot open keeps no connections
            raise

    def own_connection(self) -> Connection:
        """A connection of the caller's own, in autocommit, for locks held across statements."""
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        """Close the pooled connections (the store can still be used afterwards)."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for record modules that keep tables of their own."""
        return self._engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write: committed on success, rolled back on error.

        On SQLite the writers of this process queue on a lock first: SQLite's own busy
        handler makes a waiting writer sleep in steps of up to 100 ms, so writers that
        collide on the database lock wait far longer than the lock is held (p99 of the
        intake 0.9-2 s instead of ~0.2 s at 8 connections).
        """
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading only."""
        with self._engine.connect() as conn:
            yield conn

    # -- events ---------------------------------------------------------------------------

    def store_events(self, events_in: Sequence[EventIn], received_at: datetime) -> tuple[int, int]:
        """Store a batch of events in one transaction, skipping ones already stored.

        Returns (stored, duplicates); when it returns, the new events are committed.
        """
        return self.store_event_groups([events_in], received_at)[0]

    def store_event_groups(
        self, groups: Sequence[Sequence[EventIn]], received_at: datetime
    ) -> list[tuple[int, int]]:
        """Store the events of several requests in one transaction; (stored, duplicates) each.

        One commit for many requests is what lets the intake keep up with many small
        webhooks (group commit). An event already stored, by an earlier group too, counts
        as a duplicate. When it returns, the new events are committed.
        """
        _require_aware(received_at, "received_at")
        if self.dialect != "sqlite":
            return self._store_event_groups_pg(groups, received_at)
        batches = [self._sqlite_event_rows(group, received_at) for group in groups]
        with self.write() as conn:
            counts = [
                conn.exec_driver_sql(self._insert_event, rows).rowcount if rows else 0
                for rows in batches
            ]
        return [(stored, len(group) - stored) for stored, group in zip(counts, groups, strict=True)]

    def _sqlite_event_rows(self, events_in: Sequence[EventIn], received_at: datetime) -> list[Any]:
        """The rows to insert for a batch on SQLite, one per dedup key.

        The intake goes straight through the driver's executemany, for throughput; values
        are encoded exactly as SQLAlchemy's JSON and DATETIME types store them there, so
        every other query reads these rows back unchanged. Times are bounded by
        `bound_event_times` (the dedup key is taken from the times as sent).
        """
        rows: dict[str, Any] = {}
        received = _sqlite_datetime(received_at)
        for sent in events_in:
            key = sent.dedup_key()
            if key not in rows:
                *values, occurred_at, ends_at = _event_values(key, sent, received_at)
                rows[key] = (
                    *values,
                    _sqlite_datetime(occurred_at),
                    None if ends_at is None else _sqlite_datetime(ends_at),
                    received,
                )
        return list(rows.values())

    def _store_event_groups_pg(
        self, groups: Sequence[Sequence[EventIn]], received_at: datetime
    ) -> list[tuple[int, int]]:
        """`store_event_groups` on PostgreSQL: the events of every group in one statement.

        The rows travel as one array per column (`unnest`), in binary: the statement's text
        is the same whatever the number of rows, so psycopg prepares it once (a multi-row
        VALUES list was parsed again by psycopg on every execution, a third of the intake's
        CPU), and the server parses no text but the JSON columns (less than half the
        server's work per row of `jsonb_populate_recordset`). The keys it returns say which
        group stored what: a key sent by several groups is stored for the first and a
        duplicate for the others, as with one insert per group.
        """
        columns: list[list[Any]] = [[] for _ in range(11)]
        owner: dict[str, int] = {}
        for index, group in enumerate(groups):
            for sent in group:
                key = sent.dedup_key()
                if key in owner:
                    continue
                owner[key] = index
                values = _event_values(key, sent, received_at)
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
        stored = [0] * len(groups)
        if owner:
            # One statement is its own transaction: in autocommit it is one round trip to
            # the server instead of three (BEGIN, INSERT, COMMIT), and durable when it returns.
            with self._autocommit.connect() as conn:
                new = conn.exec_driver_sql(
                    self._insert_event, (received_at, *columns, event_notices.CHANNEL)
                )
                for key, _ in new:
                    stored[owner[key]] += 1
        return [(count, len(group) - count) for count, group in zip(stored, groups, strict=True)]

    def pending_events(self, limit: int = 500, max_bytes: int = TRIAGE_BYTE_BUDGET) -> list[Event]:
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
        with self.read() as conn:
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

    def events_pending(self) -> bool:
        """Whether any event waits for triage (one row of the pending index, however many)."""
        with self.read() as conn:
            return (
                conn.execute(
                    select(events.c.id).where(events.c.triaged_at.is_(None)).limit(1)
                ).first()
                is not None
            )

    def triage_backlog(self) -> TriageBacklog:
        """How many events wait for triage, since when, and how many triage could not handle."""
        waiting = select(func.count(), func.min(events.c.received_at)).where(
            events.c.triaged_at.is_(None)
        )
        failed = select(func.count()).select_from(event_failures)
        with self.read() as conn:
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
        stays with it for operators (`failed_events`, `/metrics`). Events already triaged are
        left alone. Returns how many events were marked.
        """
        _require_aware(at, "at")
        reasons = {event_id: reason[:2000] for event_id, reason in failures}
        if not reasons:
            return 0
        with self.write() as conn:
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
            for event_id in ids:
                decision = {"reason": reasons[event_id]}
                row = _decision_audit(at, actor, "event.failed", event_id, flow_run_id, decision)
                conn.execute(insert(audit), row)
        return len(ids)

    def retry_failed(self, event_ids: Sequence[int] | None, at: datetime, actor: str) -> list[int]:
        """Put failed events back before triage (all of them when `event_ids` is None), once
        what made them fail is mended (an estate file, a rule); the ids put back, audited."""
        _require_aware(at, "at")
        query = select(event_failures.c.event_id).order_by(event_failures.c.event_id)
        if event_ids is not None:
            query = query.where(event_failures.c.event_id.in_(list(event_ids)))
        with self.write() as conn:
            ids = list(conn.execute(query.with_for_update()).scalars())
            if not ids:
                return []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                conn.execute(delete(event_failures).where(event_failures.c.event_id.in_(chunk)))
                conn.execute(update(events).where(events.c.id.in_(chunk)).values(triaged_at=None))
            conn.execute(
                insert(audit),
                [_decision_audit(at, actor, "event.retried", i, None, {}) for i in ids],
            )
        return ids

    def failed_events(self, limit: int = 100) -> list[FailedEvent]:
        """Events triage could not handle, newest first, each with its reason."""
        query = (
            select(events, event_failures.c.at.label("failed_at"), event_failures.c.reason)
            .join(event_failures, event_failures.c.event_id == events.c.id)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [FailedEvent.model_validate(dict(row)) for row in rows]

    def get_event(self, event_id: int) -> Event:
        """One stored event."""
        with self.read() as conn:
            row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
        if row is None:
            raise RecordNotFoundError("event", event_id)
        return Event.model_validate(dict(row))

    def events_with_fingerprint(self, fingerprint: str) -> list[Event]:
        """Every stored event of one alert (firing and resolved), oldest first."""
        query = select(events).where(events.c.fingerprint == fingerprint).order_by(events.c.id)
        with self.read() as conn:
            return [Event.model_validate(dict(row)) for row in conn.execute(query).mappings()]

    def incident_events(self, incident_id: int, limit: int = 100) -> list[Event]:
        """The most recent events triage linked to an incident, newest first."""
        query = (
            select(events)
            .where(events.c.incident_id == incident_id)
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        with self.read() as conn:
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
        _require_aware(at, "at")
        decisions = {event_id: (cls, rule, inc) for event_id, cls, rule, inc in updates}
        if not decisions:
            return 0
        with self.write() as conn:
            return _mark_triaged(conn, decisions, at, actor, flow_run_id)

    # -- incidents ------------------------------------------------------------------------

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
        _require_aware(event_time, "event_time")
        now = now or event_time
        _require_aware(now, "now")
        key = create.key
        for _attempt in range(_RETRIES):
            try:
                with self.write() as conn:
                    found = self._open_for_key(conn, key, lock=True)
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
                        conn.execute(
                            insert(audit),
                            _audit_row(
                                now,
                                actor,
                                "incident.opened",
                                "incident",
                                incident.id,
                                None,
                                incident,
                                flow_run_id,
                            ),
                        )
                    _link_events(conn, link, incident.id, flow_run_id)
                    if report is not None:
                        _record_report(conn, incident.id, actor, report, now)
                    return Correlation(incident, outcome)
            except IntegrityError as exc:
                if not _is_open_key_violation(exc):
                    raise
                # A concurrent writer opened it first: the next attempt correlates to theirs.
        raise ConcurrentUpdateError("incident", key, _RETRIES)

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
        _require_aware(last_event_at, "last_event_at")
        _require_aware(now, "now")
        for _attempt in range(_RETRIES):
            with self.write() as conn:
                found = self._fetch_incident(conn, incident_id, lock=True)
                if found.state not in OPEN_STATES:
                    return None
                after = self._count_events(
                    conn, found, count, last_event_at, actor, now, flow_run_id
                )
                if after is not None:
                    _link_events(conn, link, after.id, flow_run_id)
                    return after
        raise ConcurrentUpdateError("incident", str(incident_id), _RETRIES)

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
            "version": found.version + 1,
        }
        if runbook is not None:
            changes["runbook"] = runbook
        after = found.model_copy(update=changes)
        if not self._write_incident(conn, found, after):
            return None
        action = "incident.runbook_adopted" if runbook is not None else "incident.correlated"
        conn.execute(
            insert(audit),
            _audit_row(now, actor, action, "incident", after.id, found, after, flow_run_id),
        )
        return after

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
        """Insert a New incident, reported by `actor`, and return it as stored."""
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
            "version": 1,
        }
        new_id = conn.execute(
            insert(incidents).values(values).returning(incidents.c.id)
        ).scalar_one()
        return Incident.model_validate({"id": new_id, **values})

    def _write_incident(self, conn: Connection, before: Incident, after: Incident) -> bool:
        """Write `after` if the row is still at `before`'s version; False if someone beat us."""
        values = after.model_dump(include=set(_INCIDENT_COLUMNS))
        result = conn.execute(
            update(incidents)
            .where(incidents.c.id == before.id, incidents.c.version == before.version)
            .values(values)
        )
        return result.rowcount == 1

    def _open_for_key(self, conn: Connection, key: str, lock: bool = False) -> Incident | None:
        query = select(incidents).where(
            incidents.c.correlation_key == key, incidents.c.state.in_(OPEN_STATES)
        )
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        return None if row is None else Incident.model_validate(dict(row))

    def _fetch_incident(
        self, conn: Connection, id_or_number: int | str, lock: bool = False
    ) -> Incident:
        incident_id = INCIDENT_NUMBERING.parse(id_or_number)
        row = None
        if incident_id is not None:
            query = select(incidents).where(incidents.c.id == incident_id)
            if lock:
                query = query.with_for_update()
            row = conn.execute(query).mappings().first()
        if row is None:
            raise RecordNotFoundError("incident", id_or_number)
        return Incident.model_validate(dict(row))

    def get_incident(self, id_or_number: int | str) -> Incident:
        """One incident by id (42, "42") or number ("INC0000042")."""
        with self.read() as conn:
            return self._fetch_incident(conn, id_or_number)

    def open_incident_for_key(self, key: str) -> Incident | None:
        """The open incident with this correlation key, if there is one."""
        with self.read() as conn:
            return self._open_for_key(conn, key)

    def list_incidents(
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
        query = select(incidents)
        if reported_by is not None:
            reports = select(incident_reports.c.incident_id).where(
                incident_reports.c.reporter == reported_by
            )
            query = query.where(
                or_(incidents.c.reported_by == reported_by, incidents.c.id.in_(reports))
            )
        if state:
            query = query.where(incidents.c.state.in_(list(state)))
        if host is not None:
            query = query.where(incidents.c.host == host)
        if service is not None:
            query = query.where(incidents.c.service == service)
        query = query.order_by(incidents.c.id.desc()).limit(limit).offset(offset)
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [Incident.model_validate(dict(row)) for row in rows]

    def reported_by(self, incident_id: int, person: str) -> bool:
        """Whether `person` opened the incident or reported it after whoever did."""
        reports = select(incident_reports.c.incident_id).where(
            incident_reports.c.incident_id == incident_id, incident_reports.c.reporter == person
        )
        query = select(incidents.c.id).where(
            incidents.c.id == incident_id,
            or_(incidents.c.reported_by == person, incidents.c.id.in_(reports)),
        )
        with self.read() as conn:
            return conn.execute(query).first() is not None

    def event_counts_by_class(self) -> dict[str, int]:
        """How many events are stored per triage class; "pending" for those not triaged yet
        and "failed" for those triage could not handle."""
        classes = (
            select(events.c.event_class, func.count())
            .where(events.c.event_class.is_not(None))
            .group_by(events.c.event_class)
        )
        pending = select(func.count()).where(events.c.triaged_at.is_(None))
        failed = select(func.count()).select_from(event_failures)
        with self.read() as conn:
            counts = {str(cls): int(count) for cls, count in conn.execute(classes)}
            waiting = int(conn.execute(pending).scalar_one())
            failures = int(conn.execute(failed).scalar_one())
        if waiting:
            counts["pending"] = waiting
        if failures:
            counts["failed"] = failures
        return counts

    def restore_times(self) -> list[float]:
        """Time to restore, in seconds, of every incident that has been resolved."""
        query = select(incidents.c.time_to_restore_s).where(
            incidents.c.time_to_restore_s.is_not(None)
        )
        with self.read() as conn:
            return [float(value) for value in conn.execute(query).scalars()]

    def count_open_by_priority(self) -> dict[int, int]:
        """How many incidents are open at each priority, 1 to 5 (zeros included)."""
        query = (
            select(incidents.c.priority, func.count())
            .where(incidents.c.state.in_(OPEN_STATES))
            .group_by(incidents.c.priority)
        )
        counts = dict.fromkeys(range(1, 6), 0)
        with self.read() as conn:
            for level, count in conn.execute(query):
                counts[int(level)] = int(count)
        return counts

    def update_incident(
        self,
        incident_id: int | str,
        update: IncidentUpdate,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        expected_version: int | None = None,
    ) -> Incident:
        """Apply a PATCH through the state machine and record it; unchanged if it changes nothing.

        The change goes through `lifecycle.apply_update` and bumps the version; with
        `expected_version` (an HTTP If-Match) a caller who saw an older version gets
        `StaleVersionError` and nothing changes.

        Raises:
            IllegalTransitionError, InvalidUpdateError: the update is refused; nothing changes.
            StaleVersionError: `expected_version` is not the current version.
            ConcurrentUpdateError: other writers won every retry.
        """
        _require_aware(now, "now")

        def change(before: Incident) -> Incident:
            return apply_update(before, update, now, self.sla)

        return self._modify(incident_id, change, actor, now, flow_run_id, expected_version)

    def link_flow_run(
        self,
        incident_id: int | str,
        flow_run_id: str,
        actor: str = "opsflow",
        now: datetime | None = None,
    ) -> Incident:
        """Record that a flow run acted on the incident; linking it twice changes nothing."""
        now = now or datetime.now(UTC)

        def change(before: Incident) -> Incident:
            if flow_run_id in before.flow_run_ids:
                return before
            return before.model_copy(
                update={"flow_run_ids": [*before.flow_run_ids, flow_run_id], "updated_at": now}
            )

        return self._modify(incident_id, change, actor, now, flow_run_id, None)

    def claim_incident(
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
        _require_aware(now, "now")
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

        incident = self._modify(incident_id, change, actor, now, flow_run_id, None, guard)
        return incident, claimed

    def _modify(
        self,
        incident_id: int | str,
        change: Callable[[Incident], Incident],
        actor: str,
        now: datetime,
        flow_run_id: str | None,
        expected_version: int | None,
        guard: Callable[[Connection, Incident], bool] | None = None,
    ) -> Incident:
        """Change an incident and audit it in one transaction, guarded by its version.

        The row is read under the write lock (BEGIN IMMEDIATE on SQLite, FOR UPDATE on
        PostgreSQL), so concurrent writers queue rather than fail; the version condition on
        the UPDATE is the backstop for any writer that does not take the lock. A `guard`
        that answers False leaves the incident as it is (its own writes still commit).
        """
        for _attempt in range(_RETRIES):
            with self.write() as conn:
                before = self._fetch_incident(conn, incident_id, lock=True)
                if expected_version is not None and before.version != expected_version:
                    raise StaleVersionError("incident", before.id, expected_version, before.version)
                if guard is not None and not guard(conn, before):
                    return before
                after = change(before)
                if after is before or after == before:
                    return before
                after = after.model_copy(update={"version": before.version + 1})
                if not self._write_incident(conn, before, after):
                    continue
                action = _action(before, after)
                conn.execute(
                    insert(audit),
                    _audit_row(
                        now, actor, action, "incident", after.id, before, after, flow_run_id
                    ),
                )
                return after
        raise ConcurrentUpdateError("incident", incident_id, _RETRIES)

    # -- remediation budget ---------------------------------------------------------------

    def spend_remediation(
        self, service: str, host: str, incident_id: int, budget: int, since: datetime, at: datetime
    ) -> int | None:
        """Count one automatic remediation of `service` if fewer than `budget` started since
        `since`; the count with it, or None when the budget is spent.

        Checking and counting are one write, so restorations of one service running at once
        cannot spend more than the budget between them.
        """
        _require_aware(since, "since")
        _require_aware(at, "at")
        used = select(func.count()).where(
            remediations.c.service == service, remediations.c.at >= since
        )
        with self.write() as conn:
            if self.dialect == "postgresql":  # SQLite's writers are serialised already
                conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(service))))
            count = int(conn.execute(used).scalar_one())
            if count >= budget:
                return None
            conn.execute(
                insert(remediations).values(
                    service=service, host=host, incident_id=incident_id, at=at
                )
            )
        return count + 1

    def add_worklog(
        self, incident_id: int | str, author: str, text: str, at: datetime
    ) -> WorklogEntry:
        """Add a note to an incident's worklog (audited as a change to the incident)."""
        _require_aware(at, "at")
        if not author.strip() or not text.strip():
            raise ValueError("a worklog entry needs an author and a text")
        with self.write() as conn:
            incident = self._fetch_incident(conn, incident_id)
            values = {"incident_id": incident.id, "at": at, "author": author, "text": text}
            entry_id = conn.execute(
                insert(worklog).values(values).returning(worklog.c.id)
            ).scalar_one()
            entry = WorklogEntry.model_validate({"id": entry_id, **values})
            conn.execute(
                insert(audit),
                _audit_row(
                    at, author, "incident.worklog_added", "incident", incident.id, None, entry, None
                ),
            )
        return entry

    def worklog(self, incident_id: int | str, author: str | None = None) -> list[WorklogEntry]:
        """An incident's worklog, oldest first; only `author`'s entries when given (what a
        reporter may read of it: their own reports)."""
        with self.read() as conn:
            incident = self._fetch_incident(conn, incident_id)
            query = select(worklog).where(worklog.c.incident_id == incident.id)
            if author is not None:
                query = query.where(worklog.c.author == author)
            rows = conn.execute(query.order_by(worklog.c.at, worklog.c.id)).mappings().all()
        return [WorklogEntry.model_validate(dict(row)) for row in rows]

    def audit_trail(self, record_type: str, record_id: int) -> list[AuditEntry]:
        """Every recorded change to one record, oldest first."""
        query = (
            select(audit)
            .where(audit.c.record_type == record_type, audit.c.record_id == record_id)
            .order_by(audit.c.id)
        )
        with self.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [AuditEntry.model_validate(dict(row)) for row in rows]

    # -- retention ------------------------------------------------------------------------

    def prune(self, before: datetime) -> PruneResult:
        """Delete triaged events received before `before` and audit rows older than it.

        Kept whatever their age: events not triaged yet, events of incidents still open, and
        the audit of open incidents and of records other than events and incidents (requests
        and access grants keep their approvals while they matter). Deletes in batches, each
        its own transaction, so intake and triage carry on meanwhile.
        """
        _require_aware(before, "before")
        open_incidents = select(incidents.c.id).where(incidents.c.state.in_(OPEN_STATES))
        old_events = (
            select(events.c.id)
            .where(
                events.c.received_at < before,
                events.c.triaged_at.is_not(None),
                or_(events.c.incident_id.is_(None), events.c.incident_id.not_in(open_incidents)),
            )
            .limit(_PRUNE_BATCH)
        )
        old_audit = (
            select(audit.c.id)
            .where(
                audit.c.at < before,
                or_(
                    audit.c.record_type == "event",
                    (audit.c.record_type == "incident") & audit.c.record_id.not_in(open_incidents),
                ),
            )
            .limit(_PRUNE_BATCH)
        )
        pruned_events = self._delete_in_batches(
            old_events, [(event_failures, event_failures.c.event_id), (events, events.c.id)]
        )
        pruned_audit = self._delete_in_batches(old_audit, [(audit, audit.c.id)])
        return PruneResult(events=pruned_events, audit_rows=pruned_audit)

    def _delete_in_batches(self, ids: Any, tables: list[tuple[Table, Column]]) -> int:
        """Delete the rows `ids` selects (a batch at a time) from each table, in order."""
        deleted = 0
        while True:
            with self.write() as conn:
                batch = list(conn.execute(ids).scalars())
                if not batch:
                    return deleted
                for table, column in tables:
                    conn.execute(delete(table).where(column.in_(batch)))
            deleted += len(batch)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, NORMAL sync, 10 s busy timeout, foreign keys; we issue BEGIN ourselves."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module so writers can ask for BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("opsflow_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _event_values(key: str, sent: EventIn, received_at: datetime) -> tuple[Any, ...]:
    """An event's column values for intake's insert, times bounded (`bound_event_times`),
    ending with occurred_at and ends_at as datetimes for each backend to encode."""
    item = bound_event_times(sent, received_at)
    return (
        key,
        item.source,
        item.fingerprint,
        item.status,
        item.host,
        item.service,
        json.dumps(item.labels),
        json.dumps(item.annotations),
        item.summary,
        item.occurred_at,
        item.ends_at,
    )


def _sqlite_datetime(value: datetime) -> str:
    """A datetime as SQLAlchemy's SQLite DATETIME stores it: naive UTC, microseconds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _action(before: Incident, after: Incident) -> str:
    """A short name for a change: the new state when the state changed, else what changed."""
    if before.state != after.state:
        return "incident." + after.state.lower().replace(" ", "_")
    if before.flow_run_ids != after.flow_run_ids:
        return "incident.flow_run_linked"
    return "incident.updated"


def _mark_triaged(
    conn: Connection,
    decisions: dict[int, tuple[EventClass, str | None, int | None]],
    at: datetime,
    actor: str,
    flow_run_id: str | None,
) -> int:
    """Write triage decisions on events not yet triaged, with their audit rows; count them.

    The audit row holds the decision (class, rule, incident), not copies of the event:
    the event row itself is the record of what arrived.
    """
    ids = _untriaged(conn, list(decisions))
    if not ids:
        return 0
    params, audits = [], []
    for event_id in ids:
        event_class, rule, incident_id = decisions[event_id]
        decision = {"event_class": event_class, "rule": rule, "incident_id": incident_id}
        params.append({"b_id": event_id, **decision, "triaged_at": at})
        audits.append(_decision_audit(at, actor, "event.triaged", event_id, flow_run_id, decision))
    conn.execute(update(events).where(events.c.id == bindparam("b_id")), params)
    conn.execute(insert(audit), audits)
    return len(params)


def _untriaged(conn: Connection, ids: list[int]) -> list[int]:
    """Those of `ids` not triaged yet, locked for this transaction, in id order."""
    found: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        query = select(events.c.id).where(
            events.c.id.in_(ids[start : start + _CHUNK]), events.c.triaged_at.is_(None)
        )
        found.extend(conn.execute(query.with_for_update()).scalars())
    return sorted(found)


def _decision_audit(
    at: datetime,
    actor: str,
    action: str,
    event_id: int,
    flow_run_id: str | None,
    decision: dict[str, Any],
) -> dict[str, Any]:
    """A compact audit row for a triage decision on one event: ids and the decision only."""
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "record_type": "event",
        "record_id": event_id,
        "before": None,
        "after": decision,
        "flow_run_id": flow_run_id,
    }


def _record_report(
    conn: Connection, incident_id: int, reporter: str, text: str, at: datetime
) -> None:
    """Record `reporter` as a reporter of the incident and their words in its worklog."""
    conn.execute(insert(incident_reports).values(incident_id=incident_id, reporter=reporter, at=at))
    entry = {"incident_id": incident_id, "at": at, "author": reporter, "text": text}
    entry_id = conn.execute(insert(worklog).values(entry).returning(worklog.c.id)).scalar_one()
    conn.execute(
        insert(audit),
        _audit_row(
            at,
            reporter,
            "incident.reported",
            "incident",
            incident_id,
            None,
            WorklogEntry.model_validate({"id": entry_id, **entry}),
            None,
        ),
    )


def _link_events(
    conn: Connection, link: EventLink | None, incident_id: int, flow_run_id: str | None
) -> None:
    """Record that triage sent `link`'s events to the incident, in the incident's transaction."""
    if link is None:
        return
    decision = (link.event_class, link.rule, incident_id)
    decisions = dict.fromkeys(link.event_ids, decision)
    _mark_triaged(conn, decisions, link.at, TRIAGE_ACTOR, flow_run_id)


def _audit_row(
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    record_id: int,
    before: Any,
    after: Any,
    flow_run_id: str | None,
) -> dict[str, Any]:
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "record_type": record_type,
        "record_id": record_id,
        "before": None if before is None else before.model_dump(mode="json"),
        "after": None if after is None else after.model_dump(mode="json"),
        "flow_run_id": flow_run_id,
    }


def _is_open_key_violation(exc: IntegrityError) -> bool:
    message = str(exc.orig)
    return "uq_incidents_open_key" in message or "incidents.correlation_key" in message
