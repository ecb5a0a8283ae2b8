"""People's reports go through triage's classification; every reporter is heard (finding 13)."""

from __future__ import annotations

from datetime import UTC, datetime

from opsflow.inventory.loader import load_estate
from opsflow.itsm.records import EventIn
from opsflow.itsm.triage import triage
from tests.support.factories import auth

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
    desk_client, store, desk_estate
) -> None:
    reported = desk_client.post("/api/v1/incidents", json=SERVICE_DOWN, headers=auth("rita"))
    assert reported.status_code == 201 and reported.json()["runbook"] is None
    store.events.store([real_alert()], datetime.now(UTC))
    [decision] = triage(
        store, load_estate(desk_estate), store.events.pending(10), datetime.now(UTC)
    )
    assert (decision.action, decision.runbook) == ("adopted", "restart-service")
    assert decision.incident_id == reported.json()["id"]
    assert store.incidents.get(decision.incident_id).runbook == "restart-service"


def test_a_reporter_chooses_neither_key_nor_runbook(desk_client) -> None:
    for field, value in (("correlation_key", "web1/app/service-down"), ("runbook", "x")):
        refused = desk_client.post(
            "/api/v1/incidents",
            json={**SERVICE_DOWN, "impact": 2, "urgency": 2, field: value},
            headers=auth("rita"),
        )
        assert refused.status_code == 422 and field in refused.text


def test_requesters_impact_is_noted_operators_is_applied(desk_client) -> None:
    asked = {**SERVICE_DOWN, "symptom": "slow", "impact": 1, "urgency": 1}
    by_rita = desk_client.post("/api/v1/incidents", json=asked, headers=auth("rita")).json()
    assert by_rita["priority"] == 3  # the service's impact 2, default urgency 2
    shown = desk_client.get(f"/api/v1/incidents/{by_rita['number']}", headers=auth("olga")).json()
    assert "reporter's view: impact 1, urgency 1" in shown["worklog"][0]["text"]
    asked = {**asked, "symptom": "slower"}
    by_olga = desk_client.post("/api/v1/incidents", json=asked, headers=auth("olga")).json()
    assert by_olga["priority"] == 1


def test_a_second_report_is_recorded_and_shown_to_its_reporter(desk_client) -> None:
    first = desk_client.post("/api/v1/incidents", json=SERVICE_DOWN, headers=auth("rita")).json()
    again = {**SERVICE_DOWN, "summary": "cannot log in to the app since 9:00"}
    second = desk_client.post("/api/v1/incidents", json=again, headers=auth("olga")).json()
    assert second["id"] == first["id"]
    shown = desk_client.get(f"/api/v1/incidents/{first['number']}", headers=auth("olga")).json()
    assert [(w["author"], w["text"]) for w in shown["worklog"]] == [
        ("rita", "reported: app down"),
        ("olga", "reported: cannot log in to the app since 9:00"),
    ]
    mine = desk_client.get("/api/v1/me", headers=auth("olga")).json()
    assert [i["number"] for i in mine["incidents"]] == [first["number"]]


def test_a_reporter_reads_where_the_alerts_incident_stands_not_how_it_is_handled(
    desk_client, store, desk_estate
) -> None:
    store.events.store([real_alert()], datetime.now(UTC))
    [decision] = triage(
        store, load_estate(desk_estate), store.events.pending(10), datetime.now(UTC)
    )
    assert decision.action == "opened"
    root_output = "restart failed: sudo: /usr/sbin/svc: Permission denied (stderr of web1)"
    for text in (root_output, "paged olga"):
        store.worklog.add(decision.incident_id, "restoration", text, datetime.now(UTC))
    joined = desk_client.post("/api/v1/incidents", json=SERVICE_DOWN, headers=auth("rita"))
    assert joined.json()["id"] == decision.incident_id and joined.json()["runbook"] is None
    url = f"/api/v1/incidents/{joined.json()['number']}"
    for change in (
        {"state": "In Progress", "assigned_to": "olga"},
        # A runbook's resolution (here applied by hand) quotes host output.
        {"state": "Resolved", "resolution_code": "workaround", "resolution_notes": root_output},
    ):
        assert desk_client.patch(url, json=change, headers=auth("olga")).status_code == 200

    shown = desk_client.get(url, headers=auth("rita")).json()
    assert (shown["state"], shown["host"], shown["symptom"]) == ("Resolved", "web1", "service-down")
    assert shown["resolution_code"] == "workaround"
    assert [(w["author"], w["text"]) for w in shown["worklog"]] == [("rita", "reported: app down")]
    listed = desk_client.get("/api/v1/incidents", headers=auth("rita")).json()
    mine = desk_client.get("/api/v1/me", headers=auth("rita")).json()["incidents"]
    for seen in (shown, *listed, *mine):
        assert seen["resolution_notes"] is None and seen["assigned_to"] is None
        assert seen["runbook"] is None and seen["flow_run_ids"] == []
        assert root_output not in str(seen) and "paged" not in str(seen)

    operator = desk_client.get(url, headers=auth("olga")).json()
    assert operator["resolution_notes"] == root_output and operator["assigned_to"] == "olga"
    assert operator["runbook"] == "restart-service"
    assert [w["text"] for w in operator["worklog"]] == [
        root_output,
        "paged olga",
        "reported: app down",
    ]
