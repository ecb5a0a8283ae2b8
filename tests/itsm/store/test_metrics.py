"""The records' health figures, on both backends: each agrees with the records it counts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from opsflow.itsm.records import EventIn, IncidentCreate, IncidentUpdate
from opsflow.itsm.store.metrics import (
    RESTORE_BUCKETS_S,
    oldest_pending,
    records_health,
    restored_by_day,
    sla_breached,
)
from opsflow.itsm.store.records import Records
from tests.support.factories import login_request

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def _incident(store: Records, name: str, impact: int = 1, urgency: int = 1) -> int:
    create = IncidentCreate(
        host=name,
        service="app",
        symptom="service-down",
        summary=name,
        impact=impact,
        urgency=urgency,
        correlation_key=name,
    )
    incident, _ = store.correlation.open_or_correlate(create, T0, actor="test", now=T0)
    return incident.id


def _move(store: Records, incident_id: int, at: float, state: str, **fields: str) -> None:
    update = IncidentUpdate(state=state, **fields)  # type: ignore[arg-type]
    store.incidents.update(incident_id, update, actor="test", now=minutes(at))


def _event(fingerprint: str) -> EventIn:
    return EventIn(source="t", fingerprint=fingerprint, status="firing", occurred_at=T0, labels={})


def test_sla_breaches_agree_with_each_incidents_own_rule(records_url: str) -> None:
    """P1: respond within 15 min, resolve within 1 h; the clock stops while On Hold."""
    store = Records(records_url)
    _incident(store, "unanswered")
    _move(store, _incident(store, "answered"), 5, "In Progress")
    on_hold = _incident(store, "on-hold")
    _move(store, on_hold, 5, "In Progress")
    _move(store, on_hold, 10, "On Hold", hold_reason="waiting for a vendor")
    held_once = _incident(store, "held-once")
    _move(store, held_once, 5, "In Progress")
    _move(store, held_once, 10, "On Hold", hold_reason="waiting for a vendor")
    _move(store, held_once, 40, "In Progress")
    _move(store, _incident(store, "answered-late"), 20, "In Progress")
    resolved = _incident(store, "resolved")
    _move(store, resolved, 200, "Resolved", resolution_code="manual", resolution_notes="done")
    _incident(store, "p5", impact=3, urgency=3)  # respond within a day

    incidents = [i for i in store.incidents.list(limit=100) if i.is_open]
    for at in (10, 20, 80, 95, 120):
        now = minutes(at)
        expected = Counter(
            (i.priority, target)
            for i in incidents
            for target, missed in i.sla_breaches(now).items()
            if missed
        )
        with store.db.read() as conn:
            assert sla_breached(conn, store.db.dialect, now) == dict(expected), f"at {at} min"

    with store.db.read() as conn:  # the figures themselves, so that agreeing is not agreeing on 0
        assert sla_breached(conn, store.db.dialect, minutes(80)) == {
            (1, "response"): 2,  # unanswered, answered-late
            (1, "resolution"): 3,  # unanswered, answered, answered-late (held-once: due at 90)
        }


def test_records_health_counts_what_waits_and_what_ran(records_url: str) -> None:
    store = Records(records_url)
    store.events.store([_event("a"), _event("b")], minutes(1))
    store.events.store([_event("c")], minutes(2))
    [first, *_] = store.events.pending()
    store.events.mark_failed([(first.id, "no rule")], minutes(3))
    with store.db.read() as conn:
        assert oldest_pending(conn) == minutes(1)

    for n, restore_s in enumerate((0.5, 4, 4000)):
        incident_id = _incident(store, f"restored-{n}")
        _move(store, incident_id, 0, "In Progress")
        store.incidents.update(
            incident_id,
            IncidentUpdate(state="Resolved", resolution_code="manual", resolution_notes="ok"),
            actor="test",
            now=T0 + timedelta(seconds=restore_s),
        )
    _incident(store, "open-p3", impact=2, urgency=2)

    requests = store.requests
    waiting = requests.create("restart", {}, "carol", "one", "carol", minutes(5))
    requests.move(waiting.id, "awaiting-approval", "desk", minutes(5))
    requests.create("restart", {}, "dave", "one", "dave", minutes(6))  # not asked yet
    store.access.request(login_request("carol", "on call"), "carol", minutes(7))
    leases = store.leases
    now = datetime.now(UTC)
    assert leases.take("restoration:1", "worker-a", now, 60)
    assert leases.take("restoration:2", "worker-b", now - timedelta(minutes=5), 60)  # lapsed
    assert leases.take("request:1", "worker-a", now, 60)

    health = records_health(store.db, now)

    assert (health.pending.count, health.pending.oldest) == (2, minutes(1))
    assert health.failed_events == 1
    assert health.open_incidents == {1: 0, 2: 0, 3: 1, 4: 0, 5: 0}
    assert health.restorations_running == 1
    assert health.approvals["request"].count == 1
    assert health.approvals["request"].oldest == minutes(5)
    assert (health.approvals["access"].count, health.approvals["access"].oldest) == (1, minutes(7))
    ttr = health.restore_times
    assert (ttr.count, round(ttr.sum_s, 3)) == (3, 4004.5)
    assert dict(ttr.buckets) == {
        bound: sum(1 for s in (0.5, 4, 4000) if s <= bound) for bound in RESTORE_BUCKETS_S
    }


def test_an_empty_store_reads_as_zeros(records_url: str) -> None:
    health = records_health(Records(records_url).db, datetime.now(UTC))
    assert (health.pending.count, health.pending.oldest, health.failed_events) == (0, None, 0)
    assert (health.restore_times.count, health.restore_times.sum_s) == (0, 0.0)
    assert all(count == 0 for _, count in health.restore_times.buckets)
    assert health.approvals["access"].oldest is None


def test_time_to_restore_per_day_counts_each_incident_on_the_utc_day_it_was_restored(
    records_url: str,
) -> None:
    """Opened 1 March 09:00; the view of 2 to 4 March leaves out what was restored on 1 March
    and what was reopened, and puts midnight in the day it starts."""
    store = Records(records_url)
    restored_at = {"first-march": 60, "midnight": 900, "late": 900 + 23 * 60, "fourth": 4380}
    for name, at in restored_at.items():
        _move(store, _incident(store, name), at, "Resolved", resolution_code="manual")
    reopened = _incident(store, "reopened")
    _move(store, reopened, 1000, "Resolved", resolution_code="manual")
    _move(store, reopened, 1010, "In Progress")
    _incident(store, "still-open")

    with store.db.read() as conn:
        days = restored_by_day(conn, datetime(2026, 3, 4, 12, 0, tzinfo=UTC), 3)

    assert [d.day for d in days] == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    assert [d.count for d in days] == [2, 0, 1]
    assert days[0].mean_s == (900 + 900 + 23 * 60) * 60 / 2
    assert days[0].longest_s == (900 + 23 * 60) * 60
    assert days[1].mean_s is None and days[1].longest_s is None
    assert days[2].mean_s == days[2].longest_s == 4380 * 60
