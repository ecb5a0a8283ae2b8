"""The audit: one append-only row per change to a record, written in the change's transaction.

Who (actor), what (action), which record (type and id), before and after, from which flow
run, when. `write_audit` (rows made here) and `write_audit_of` (one row per record a query
selects, all alike) are the only writers of the table; retention (`itsm.store.retention`)
deletes the old rows of records that no longer matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Index,
    String,
    Table,
    insert,
    literal,
    select,
)

from opsflow.itsm.records import AuditEntry
from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata

audit = Table(
    "audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("record_type", String(32), nullable=False),
    Column("record_id", Id, nullable=False),
    Column("before", Json),
    Column("after", Json),
    Column("flow_run_id", String(64)),
)
Index("ix_audit_record", audit.c.record_type, audit.c.record_id, audit.c.id)

Snapshot = BaseModel | dict[str, Any] | None
"""A record as it was (a model), or what a change says about it (a dict), or nothing."""


def audit_entry(
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    record_id: int,
    before: Snapshot = None,
    after: Snapshot = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """One audit row, `before` and `after` as JSON (models dumped, datetimes in ISO 8601)."""
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "record_type": record_type,
        "record_id": record_id,
        "before": _json(before),
        "after": _json(after),
        "flow_run_id": flow_run_id,
    }


def write_audit(conn: Connection, entries: dict[str, Any] | Sequence[dict[str, Any]]) -> None:
    """Append audit rows (`audit_entry`) in the caller's transaction, so a change is never
    committed without its audit nor the reverse."""
    rows = [entries] if isinstance(entries, dict) else list(entries)
    if rows:
        conn.execute(insert(audit), rows)


def write_audit_of(
    conn: Connection,
    record_ids: ColumnElement[int],
    where: ColumnElement[bool],
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    after: dict[str, Any],
    flow_run_id: str | None = None,
) -> None:
    """Append one row per record whose `record_ids` column `where` selects, each saying the
    same `after`, as one INSERT ... SELECT in the caller's transaction, in id order.

    A storm's repeated alerts share one triage decision: row by row, their audit cost more
    CPU per alert than the intake that stored them.
    """
    rows = (
        select(
            literal(at, UtcDateTime),
            literal(actor, String),
            literal(action, String),
            literal(record_type, String),
            record_ids,
            literal(_json(after), Json),
            literal(flow_run_id, String),
        )
        .where(where)
        .order_by(record_ids)
    )
    columns = ["at", "actor", "action", "record_type", "record_id", "after", "flow_run_id"]
    conn.execute(insert(audit).from_select(columns, rows))


def _json(value: Snapshot) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in value.items()}


class Audit:
    """Reading the audit of `db`'s records; nothing here changes or deletes a row."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def trail(self, record_type: str, record_id: int) -> list[AuditEntry]:
        """Every recorded change to one record, oldest first."""
        query = (
            select(audit)
            .where(audit.c.record_type == record_type, audit.c.record_id == record_id)
            .order_by(audit.c.id)
        )
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [AuditEntry.model_validate(dict(row)) for row in rows]
