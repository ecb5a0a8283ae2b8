"""Intake's insert path: new events stored as fast as the database takes them, deduplicated.

The desk's group commit stores the events of many webhooks in one transaction; this path
skips SQLAlchemy's per-row work (SQLite: the driver's executemany of pre-encoded rows;
PostgreSQL: one statement of column arrays in binary), measured in `bench.intake`. The
database deduplicates on `dedup_key`, so a repeated delivery stores nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy.dialects import sqlite

from opsflow.itsm.records import EventIn, bound_event_times
from opsflow.itsm.store import event_notices
from opsflow.itsm.store.db import Database

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
the channel on which workers are told on commit (`itsm.store.event_notices`: one notice per
transaction)."""


class EventIntake:
    """Stores groups of new events in `db`'s `events` table, counting each group's (stored,
    duplicates)."""

    def __init__(self, db: Database, events: Table) -> None:
        self.db = db
        if db.dialect == "sqlite":
            self._insert_event: Any = str(
                sqlite.insert(events)
                .values({name: bindparam(name) for name in _EVENT_INSERT_COLUMNS})
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .compile(dialect=db.engine.dialect)
            )
        else:
            self._insert_event = _PG_INSERT_EVENTS

    def store_groups(
        self, groups: Sequence[Sequence[EventIn]], received_at: datetime
    ) -> list[tuple[int, int]]:
        """Store every group's new events in one transaction; (stored, duplicates) each."""
        if self.db.dialect != "sqlite":
            return self._store_groups_pg(groups, received_at)
        batches = [self._sqlite_rows(group, received_at) for group in groups]
        with self.db.write() as conn:
            counts = [
                conn.exec_driver_sql(self._insert_event, rows).rowcount if rows else 0
                for rows in batches
            ]
        return [(stored, len(group) - stored) for stored, group in zip(counts, groups, strict=True)]

    def _sqlite_rows(self, events_in: Sequence[EventIn], received_at: datetime) -> list[Any]:
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

    def _store_groups_pg(
        self, groups: Sequence[Sequence[EventIn]], received_at: datetime
    ) -> list[tuple[int, int]]:
        """`store_groups` on PostgreSQL: the events of every group in one statement.

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
            with self.db.autocommit.connect() as conn:
                new = conn.exec_driver_sql(
                    self._insert_event, (received_at, *columns, event_notices.CHANNEL)
                )
                for key, _ in new:
                    stored[owner[key]] += 1
        return [(count, len(group) - count) for count, group in zip(stored, groups, strict=True)]


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
