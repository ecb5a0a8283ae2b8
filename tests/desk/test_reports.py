"""People's reports go through triage's classification; every reporter is heard (finding 13)."""

from __future__ import annotations

from datetime import UTC, datetime

from inventory.loader import load_estate
from itsm.records import EventIn
from itsm.triage import triage
from tests.desk.conftest import auth

SERVICE_DOWN = {"host": "web1", "service": "app", "symptom": "service-down", "summary": "app down"}


def real_alert() -> EventIn:
    labels = {"alertname": "ServiceDown", "host": "web1", "service": "app", "severity": "critical"}
    return EventIn(
        source="alertmanager",
        fingerprint="sd-web1",
        status="firing",
        host="web1",
        service="app",
        labels=labels,
        summary="app is down on web1",
        occurred_at=datetime.now(UTC),
    )


def test_a_report_first_does_not_stop_the_runbook_of_the_real_alert(
    desk, store, desk_estate
) -> None:
    reported = desk.post("/api/v1/incidents", json=SERVICE_DOWN, headers=auth("rita"))
    assert reported.status_code == 201 and reported.json()["runbook"] is None
    store.store_events([real_alert()], datetime.now(UTC))
    [decision] = triage(
        store, load_estate(desk_estate), store.pending_events(10), datetime.now(UTC)
    )
    assert (decision.action, decision.runbook) == ("adopted", "restart-service")
    assert decision.incident_id == reported.json()["id"]
    assert store.get_incident(decision.incident_id).runbook == "restart-service"


def test_a_reporter_chooses_neither_key_nor_runbook(desk) -> None:
    for field, value in (("correlation_key", "web1/app/service-down"), ("runbook", "x")):
        refused = desk.post(
            "/api/v1/incidents",
            json={**SERVICE_DOWN, "impact": 2, "urgency": 2, field: value},
            headers=auth("rita"),
        )
        assert refused.status_code == 422 and field in refused.text


def test_requesters_impact_is_noted_operators_is_applied(desk) -> None:
    asked = {**SERVICE_DOWN, "symptom": "slow", "impact": 1, "urgency": 1}
    by_rita = desk.post("/api/v1/incidents", json=asked, headers=auth("rita")).json()
    assert by_rita["priority"] == 3  # the service's impact 2, default urgency 2
    shown = desk.get(f"/api/v1/incidents/{by_rita['number']}", headers=auth("olga")).json()
    assert "reporter's view: impact 1, urgency 1" in shown["worklog"][0]["text"]
    asked = {**asked, "symptom": "slower"}
    by_olga = desk.post("/api/v1/incidents", json=asked, headers=auth("olga")).json()
    assert by_olga["priority"] == 1


def test_a_second_report_is_recorded_and_shown_to_its_reporter(desk) -> None:
    first = desk.post("/api/v1/incidents", json=SERVICE_DOWN, headers=auth("rita")).json()
    again = {**SERVICE_DOWN, "summary": "cannot log in to the app since 9:00"}
    second = desk.post("/api/v1/incidents", json=again, headers=auth("olga")).json()
    assert second["id"] == first["id"]
    shown = desk.get(f"/api/v1/incidents/{first['number']}", headers=auth("olga")).json()
    assert [(w["author"], w["text"]) for w in shown["worklog"]] == [
        ("rita", "reported: app down"),
        ("olga", "reported: cannot log in to the app since 9:00"),
    ]
    mine = desk.get("/api/v1/me", headers=auth("olga")).json()
    assert [i["number"] for i in mine["incidents"]] == [first["number"]]
