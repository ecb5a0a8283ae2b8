"""Retention: deleting events, audit rows and paged failures that no longer matter, a batch
at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, delete, or_, select

from opsflow.itsm.records import OPEN_STATES
from opsflow.itsm.store.audit import audit
from opsflow.itsm.store.db import CHUNK, Database, require_aware
from opsflow.itsm.store.events import event_failures, events
from opsflow.itsm.store.incidents import incidents
from opsflow.itsm.store.paging import failed_run_pages

_PRUNE_BATCH = CHUNK
"""Rows deleted per transaction, so pruning never holds the lock long."""


@dataclass(frozen=True)
class PruneResult:
    """What a retention clean-up deleted."""

    events: int
    audit_rows: int
    paged_failures: int


def prune(db: Database, before: datetime) -> PruneResult:
    """Delete triaged events received before `before`, audit rows older than it, and failed
    runs paged before it.

    Kept whatever their age: events not triaged yet, events of incidents still open, and
    the audit of open incidents and of records other than events and incidents (requests
    and access grants keep their approvals while they matter), and failed runs no page has
    carried yet. Deletes in batches, each
    its own transaction, so intake and triage carry on meanwhile.
    """
    require_aware(before, "before")
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
    pruned_events = _delete_in_batches(
        db, old_events, [(event_failures, event_failures.c.event_id), (events, events.c.id)]
    )
    pruned_audit = _delete_in_batches(db, old_audit, [(audit, audit.c.id)])
    old_pages = (
        select(failed_run_pages.c.id).where(failed_run_pages.c.sent_at < before).limit(_PRUNE_BATCH)
    )
    pruned_pages = _delete_in_batches(db, old_pages, [(failed_run_pages, failed_run_pages.c.id)])
    return PruneResult(events=pruned_events, audit_rows=pruned_audit, paged_failures=pruned_pages)


def _delete_in_batches(db: Database, ids: Any, tables: list[tuple[Table, Column]]) -> int:
    """Delete the rows `ids` selects (a batch at a time) from each table, in order."""
    deleted = 0
    while True:
        with db.write() as conn:
            batch = list(conn.execute(ids).scalars())
            if not batch:
                return deleted
            for table, column in tables:
                conn.execute(delete(table).where(column.in_(batch)))
        deleted += len(batch)
