"""Triage over a real store: rules, severity, correlation, maintenance, closing the loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inventory.loader import load_estate
from inventory.models import MaintenanceWindow
from itsm.records import EventIn
from itsm.triage import triage

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def estate(desk_estate):
    return load_estate(desk_estate)


def alert(status="firing", at=NOW, fingerprint="f1", **labels) -> EventIn:
    labels = {
        "alertname": "ServiceDown",
        "host": "web1",
        "service": "app",
        "severity": "critical",
        **labels,
    }
    return EventIn(
        source="alertmanager",
        fingerprint=fingerprint,
        status=status,
        host=labels.get("host"),
        service=labels.get("service"),
        labels=labels,
        summary=f"{labels['alertname']} on {labels.get('host')}",
        occurred_at=at,
        ends_at=at + timedelta(seconds=5) if status == "resolved" else None,
    )


def run(store, estate, *events: EventIn):
    store.store_events(list(events), NOW)
    return triage(store, estate, store.pending_events(100), NOW)


@pytest.mark.parametrize(
    ("labels", "event_class", "rule", "action"),
    [
        ({}, "exception", "down", "opened"),
        (
            {"alertname": "Other", "severity": "critical"},
            "exception",
            "severity:critical",
            "opened",
        ),
        ({"alertname": "Other", "severity": "warning"}, "warning", "severity:warning", "recorded"),
        ({"alertname": "Other", "severity": "info"}, "informational", "severity:info", "recorded"),
    ],
    ids=["rule", "critical", "warning", "info"],
)
def test_classification(store, estate, labels, event_class, rule, action) -> None:
    [decision] = run(store, estate, alert(**labels))
    assert (decision.event_class, decision.rule, decision.action) == (event_class, rule, action)
    assert store.pending_events(10) == []


def test_rule_sets_priority_and_runbook(store, estate) -> None:
    [decision] = run(store, estate, alert())
    incident = store.get_incident(decision.incident_number)
    assert (incident.impact, incident.urgency, incident.priority) == (2, 1, 2)
    assert (incident.symptom, incident.runbook) == ("service-down", "restart-service")


def test_firing_events_correlate_to_one_incident(store, estate) -> None:
    decisions = run(
        store,
        estate,
        *(alert(fingerprint=f"f{i}", at=NOW + timedelta(seconds=i)) for i in range(5)),
    )
    assert [d.action for d in decisions] == ["opened"] + ["correlated"] * 4
    assert len({d.incident_id for d in decisions}) == 1
    assert store.get_incident(decisions[0].incident_number).event_count == 5


def test_unknown_host_opens_an_incident_without_automation(store, estate) -> None:
    [decision] = run(store, estate, alert(host="nowhere; reboot"))
    incident = store.get_incident(decision.incident_number)
    assert incident.host == "nowhere; reboot" and incident.runbook is None


def test_maintenance_window_records_but_opens_nothing(store, estate) -> None:
    window = MaintenanceWindow(
        name="patching",
        hosts=["web1"],
        start=NOW - timedelta(minutes=5),
        end=NOW + timedelta(minutes=5),
    )
    under_maintenance = estate.model_copy(update={"maintenance": [window]})
    [decision] = run(store, under_maintenance, alert())
    assert decision.action == "suppressed" and "patching" in decision.rule
    assert store.list_incidents() == []
    [after] = run(store, under_maintenance, alert(at=NOW + timedelta(minutes=6), fingerprint="x"))
    assert after.action == "opened"


def test_resolved_alert_closes_an_untouched_incident(store, estate) -> None:
    [opened] = run(store, estate, alert())
    [closed] = run(store, estate, alert(status="resolved"))
    assert closed.action == "alert-resolved" and closed.incident_id == opened.incident_id
    incident = store.get_incident(opened.incident_number)
    assert (incident.state, incident.resolution_code) == ("Resolved", "no-fault")


def test_resolved_alert_after_restoration_leaves_it_resolved(store, estate) -> None:
    from itsm.records import IncidentUpdate

    [opened] = run(store, estate, alert())
    store.update_incident(opened.incident_id, IncidentUpdate(state="In Progress"), "test", NOW)
    store.update_incident(
        opened.incident_id,
        IncidentUpdate(state="Resolved", resolution_code="auto-remediated"),
        "test",
        NOW,
    )
    [late] = run(store, estate, alert(status="resolved"))
    assert late.action == "no-open-incident"
    assert store.get_incident(opened.incident_number).resolution_code == "auto-remediated"


def test_firing_and_resolution_in_one_batch_close_the_loop(store, estate) -> None:
    decisions = run(store, estate, alert(), alert(status="resolved"))
    assert [d.action for d in decisions] == ["opened", "alert-resolved"]
    incident = store.get_incident(decisions[0].incident_number)
    assert (incident.state, incident.resolution_code) == ("Resolved", "no-fault")
