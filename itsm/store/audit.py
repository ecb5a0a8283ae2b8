"""The audit: one append-only row per change to a record, written in the change's transaction.

Who (actor), what (action), which record (type and id), before and after, from which flow
run, when. Rows are only ever added here; retention (`itsm.store.retention`) deletes the old
ones of records that no longer matter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, Connection, Index, String, Table, insert, select

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


def audit_row(
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


def decision_audit(
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


def write_audit(
    conn: Connection,
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    record_id: int,
    before: BaseModel | dict[str, Any] | None,
    after: BaseModel | dict[str, Any] | None,
    flow_run_id: str | None,
) -> None:
    """Append one audit row in the caller's transaction."""

    def dump(value: BaseModel | dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or isinstance(value, dict):
            return None if value is None else _jsonable(value)
        return value.model_dump(mode="json")

    conn.execute(
        insert(audit).values(
            at=at,
            actor=actor,
            action=action,
            record_type=record_type,
            record_id=record_id,
            before=dump(before),
            after=dump(after),
            flow_run_id=flow_run_id,
        )
    )


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


class Audit:
    """Reading the audit of `db`'s records."""

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
