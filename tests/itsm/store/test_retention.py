"""Retention: old triaged events and audit rows go; recent ones and open incidents' stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opsflow.itsm.records import EventIn, IncidentCreate, IncidentUpdate
from opsflow.itsm.store.events import EventLink
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.retention import prune

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def event(fingerprint: str, at: datetime) -> EventIn:
    return EventIn(
        source="t", fingerprint=fingerprint, status="firing", host="web1", occurred_at=at
    )


def incident(store: Records, key: str, event_id: int, at: datetime):
    create = IncidentCreate(
        host="web1", symptom=key, summary=key, impact=2, urgency=2, correlation_key=key
    )
    link = EventLink([event_id], "exception", "r", at)
    return store.correlation.open_or_correlate(create, at, actor="triage", link=link)[0]


def test_prune_deletes_old_rows_and_keeps_recent_pending_and_open_incidents(
    records_url: str,
) -> None:
    store = Records(records_url)
    old, recent = T0, T0 + timedelta(days=100)
    store.events.store([event(f"old{i}", old) for i in range(4)], old)
    store.events.store([event("recent", recent)], recent)
    old_ids = [e.id for e in store.events.pending(10)][:4]
    recent_id = old_ids[-1] + 1
    closed = incident(store, "closed", old_ids[0], old)
    store.incidents.update(
        closed.id, IncidentUpdate(state="Resolved", resolution_code="manual"), "t", old
    )
    still_open = incident(store, "open", old_ids[1], old)
    store.events.mark_triaged([(old_ids[2], "warning", "r", None)], old)
    store.events.mark_failed([(old_ids[3], "no CI")], old)
    store.events.mark_triaged([(recent_id, "warning", "r", None)], recent)
    pending = store.events.store([event("pending", old)], old)
    assert pending == (1, 0)
    window = timedelta(minutes=5)
    paged = store.paging.record("ops", "run-paged", {}, window, "pager", 60.0, now=old)
    store.paging.mark_sent([paged.failure.id], "pager", old)
    held = store.paging.record("ops", "run-held", {}, window, "pager", 60.0, now=old)
    assert held.outcome == "held"

    result = prune(store.db, recent - timedelta(days=30))

    assert result.events == 3 and result.audit_rows >= 3
    assert result.paged_failures == 1
    assert [f.flow_run_id for f in store.paging.unsent("ops")] == ["run-held"]  # never paged
    left = {e.fingerprint for e in store.events.pending(10)}
    assert left == {"pending"}  # never triaged: kept whatever its age
    kept = {e.id for e in store.events.of_incident(still_open.id)}
    assert kept == {old_ids[1]}
    assert store.events.of_incident(closed.id) == []
    assert store.events.failed() == []
    assert store.events.get(recent_id).rule == "r"
    assert store.audit.trail("incident", closed.id) == []
    assert [a.action for a in store.audit.trail("incident", still_open.id)] == ["incident.opened"]
    assert store.audit.trail("event", old_ids[2]) == []
    assert len(store.audit.trail("event", recent_id)) == 1
    assert prune(store.db, recent - timedelta(days=30)).events == 0  # nothing left to prune
