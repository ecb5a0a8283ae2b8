"""Incidents through the desk: report, follow, change by the rules, and metrics."""

from __future__ import annotations

from tests.support.factories import auth

REPORT = {
    "host": "web1",
    "service": "app",
    "symptom": "slow",
    "summary": "pages take 10 s",
    "impact": 1,
    "urgency": 2,
}


def test_a_person_reports_and_follows_an_incident(desk_client) -> None:
    created = desk_client.post("/api/v1/incidents", json=REPORT, headers=auth("rita"))
    assert created.status_code == 201
    incident = created.json()
    # rita is a requester: her impact 1 is noted, the service's impact 2 applies (I2/U2: P3).
    assert (incident["number"], incident["priority"], incident["state"]) == ("INC0000001", 3, "New")
    shown = desk_client.get(f"/api/v1/incidents/{incident['number']}", headers=auth("rita")).json()
    assert shown["sla_breached"] == {"response": False, "resolution": False}
    listed = desk_client.get(
        "/api/v1/incidents", params={"state": "New"}, headers=auth("rita")
    ).json()
    assert [i["number"] for i in listed] == ["INC0000001"]


def test_reporting_the_same_thing_twice_gives_the_open_incident(desk_client) -> None:
    first = desk_client.post("/api/v1/incidents", json=REPORT, headers=auth("rita")).json()
    again = desk_client.post("/api/v1/incidents", json=REPORT, headers=auth("olga")).json()
    assert again["id"] == first["id"] and again["event_count"] == 2


def test_operator_moves_it_through_legal_states_only(desk_client, store) -> None:
    number = desk_client.post("/api/v1/incidents", json=REPORT, headers=auth("rita")).json()[
        "number"
    ]
    url = f"/api/v1/incidents/{number}"
    assert (
        desk_client.patch(url, json={"state": "In Progress"}, headers=auth("rita")).status_code
        == 403
    )
    assert (
        desk_client.patch(url, json={"state": "In Progress"}, headers=auth("olga")).status_code
        == 200
    )
    illegal = desk_client.patch(url, json={"state": "New"}, headers=auth("olga"))
    assert illegal.status_code == 409 and "In Progress" in illegal.json()["detail"]
    held = desk_client.patch(url, json={"state": "On Hold"}, headers=auth("olga"))
    assert held.status_code == 409 and "hold_reason" in held.json()["detail"]
    resolved = desk_client.patch(
        url,
        json={"state": "Resolved", "resolution_code": "manual", "resolution_notes": "restarted"},
        headers=auth("olga"),
    ).json()
    assert resolved["state"] == "Resolved" and resolved["time_to_restore_s"] >= 0
    actions = [a.actor for a in store.audit.trail("incident", resolved["id"])]
    assert actions == ["rita", "rita", "olga", "olga"]  # opened, reported, two changes


def test_unknown_fields_and_incidents_are_refused(desk_client) -> None:
    bad = desk_client.post(
        "/api/v1/incidents", json={**REPORT, "colour": "red"}, headers=auth("rita")
    )
    assert bad.status_code == 422 and "colour" in bad.text
    assert desk_client.get("/api/v1/incidents/INC0000999", headers=auth("rita")).status_code == 404


def test_health_and_metrics(desk_client) -> None:
    desk_client.post("/api/v1/incidents", json=REPORT, headers=auth("rita"))
    health = desk_client.get("/api/v1/health").json()
    assert (health["status"], health["open_incidents"], health["triage"]["pending_events"]) == (
        "ok",
        1,
        0,
    )
    metrics = desk_client.get("/metrics").text
    assert 'opsflow_incidents_open{priority="P3"} 1' in metrics  # rita's report: I2/U2
    assert "opsflow_time_to_restore_seconds_count 0" in metrics


def test_openapi_documents_every_endpoint(desk_client) -> None:
    paths = desk_client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/events/alertmanager",
        "/api/v1/events",
        "/api/v1/incidents",
        "/api/v1/incidents/{incident_id}",
        "/api/v1/health",
        "/metrics",
    ):
        assert path in paths
