"""Operators put failed events back before triage once the cause is mended."""

from __future__ import annotations

from datetime import UTC, datetime

from opsflow.inventory.loader import load_estate
from opsflow.itsm.records import EventIn
from opsflow.itsm.triage import triage
from tests.support.factories import auth

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_an_operator_retries_failed_events_and_nobody_else_can(
    desk_client, store, desk_estate
) -> None:
    nowhere = EventIn(
        source="alertmanager",
        fingerprint="noci",
        status="firing",
        labels={"alertname": "Mystery", "severity": "critical"},
        summary="something somewhere",
        occurred_at=NOW,
    )
    store.events.store([nowhere], NOW)
    estate = load_estate(desk_estate)
    [decision] = triage(store, estate, store.events.pending(10), NOW)
    assert decision.action == "failed"
    failed_id = decision.event_id

    refused = desk_client.post("/api/v1/events/failed/retry", json={}, headers=auth("rita"))
    assert refused.status_code == 403
    assert [e.id for e in store.events.failed()] == [failed_id]

    answer = desk_client.post("/api/v1/events/failed/retry", json={}, headers=auth("olga"))
    assert (answer.status_code, answer.json()) == (200, {"retried": [failed_id]})
    assert store.events.failed() == []
    assert [e.id for e in store.events.pending(10)] == [failed_id]
    assert desk_client.post(
        "/api/v1/events/failed/retry", json={}, headers=auth("olga")
    ).json() == {"retried": []}
    [again] = triage(store, estate, store.events.pending(10), NOW)
    assert again.action == "failed", "still no CI: it fails again, with its reason"
    actions = [row.action for row in store.audit.trail("event", failed_id)]
    assert actions == ["event.failed", "event.retried", "event.failed"]
