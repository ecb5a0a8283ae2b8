"""Triage over a real store: rules, severity, correlation, maintenance, closing the loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsflow.inventory.loader import load_estate
from opsflow.inventory.models import EventRule, LabelContract, MaintenanceWindow
from opsflow.itsm.records import EventIn
from opsflow.itsm.triage import triage

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
    labels = {name: value for name, value in labels.items() if value is not None}
    return EventIn(
        source="alertmanager",
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        summary=f"{labels['alertname']} on {labels.get('host')}",
        occurred_at=at,
        ends_at=at + timedelta(seconds=5) if status == "resolved" else None,
    )


def run(store, estate, *events: EventIn):
    store.events.store(list(events), NOW)
    return triage(store, estate, store.events.pending(100), NOW)


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
    assert store.events.pending(10) == []


def test_rule_sets_priority_and_runbook(store, estate) -> None:
    [decision] = run(store, estate, alert())
    incident = store.incidents.get(decision.incident_number)
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
    assert store.incidents.get(decisions[0].incident_number).event_count == 5


def test_unknown_host_opens_an_incident_without_automation(store, estate) -> None:
    [decision] = run(store, estate, alert(host="nowhere; reboot"))
    incident = store.incidents.get(decision.incident_number)
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
    assert store.incidents.list() == []
    [after] = run(store, under_maintenance, alert(at=NOW + timedelta(minutes=6), fingerprint="x"))
    assert after.action == "opened"


def test_resolved_alert_closes_an_untouched_incident(store, estate) -> None:
    [opened] = run(store, estate, alert())
    [closed] = run(store, estate, alert(status="resolved"))
    assert closed.action == "alert-resolved" and closed.incident_id == opened.incident_id
    incident = store.incidents.get(opened.incident_number)
    assert (incident.state, incident.resolution_code) == ("Resolved", "no-fault")


def test_resolved_alert_after_restoration_leaves_it_resolved(store, estate) -> None:
    from opsflow.itsm.records import IncidentUpdate

    [opened] = run(store, estate, alert())
    store.incidents.update(opened.incident_id, IncidentUpdate(state="In Progress"), "test", NOW)
    store.incidents.update(
        opened.incident_id,
        IncidentUpdate(state="Resolved", resolution_code="auto-remediated"),
        "test",
        NOW,
    )
    [late] = run(store, estate, alert(status="resolved"))
    assert late.action == "no-open-incident"
    assert store.incidents.get(opened.incident_number).resolution_code == "auto-remediated"


def test_firing_and_resolution_in_one_batch_close_the_loop(store, estate) -> None:
    decisions = run(store, estate, alert(), alert(status="resolved"))
    assert [d.action for d in decisions] == ["opened", "alert-resolved"]
    incident = store.incidents.get(decisions[0].incident_number)
    assert (incident.state, incident.resolution_code) == ("Resolved", "no-fault")


# -- one event never stops triage (issue 8, finding 5) --------------------------------------


def stored_as_before_the_clamp(store, event: EventIn) -> int:
    """Store `event` with its times as sent, as intake did before times were bounded."""
    from sqlalchemy import insert

    from opsflow.itsm.store.events import events

    row = {
        "dedup_key": event.dedup_key(),
        **event.model_dump(include={"source", "fingerprint", "status", "host", "service"}),
        "labels": event.labels,
        "annotations": event.annotations,
        "summary": event.summary,
        "occurred_at": event.occurred_at,
        "received_at": NOW,
    }
    with store.db.write() as conn:
        return conn.execute(insert(events).values(row).returning(events.c.id)).scalar_one()


def test_events_triage_cannot_handle_are_marked_failed_and_the_rest_go_on(store, estate) -> None:
    far_future = stored_as_before_the_clamp(
        store, alert(fingerprint="y9999", at=datetime(9999, 12, 31, 23, 0, tzinfo=UTC))
    )
    no_ci = alert(fingerprint="noci", alertname="Mystery", host=None, service=None)
    store.events.store([no_ci, alert(fingerprint="real", host="web2")], NOW)
    decisions = triage(store, estate, store.events.pending(100), NOW)
    by_event = {d.event_id: d for d in decisions}
    assert by_event[far_future].action == "failed"
    assert "OverflowError" in (by_event[far_future].reason or "")
    [real] = [d for d in decisions if d.action == "opened"]
    assert store.incidents.get(real.incident_number).host == "web2"
    assert store.events.pending(10) == []
    failed = {e.id: e.reason for e in store.events.failed()}
    assert set(failed) == {
        far_future,
        next(d.event_id for d in decisions if d.rule == "severity:critical"),
    }
    assert "no CI" in failed[max(failed)]
    assert store.events.counts_by_class()["failed"] == 2
    # A second run has nothing left to retry: the failures are recorded, not pending.
    assert triage(store, estate, store.events.pending(100), NOW) == []


def test_far_future_time_is_clamped_at_intake_and_the_original_kept(store, estate) -> None:
    from opsflow.itsm.records import EVENT_MAX_SKEW, ORIGINAL_TIME_ANNOTATION

    sent = alert(fingerprint="y9999", at=datetime(9999, 12, 31, 23, 0, tzinfo=UTC))
    assert store.events.store([sent], NOW) == (1, 0)
    assert store.events.store([sent], NOW + timedelta(seconds=30)) == (0, 1)  # still deduped
    [event] = store.events.pending(10)
    assert event.occurred_at == NOW + EVENT_MAX_SKEW
    assert "9999-12-31T23:00:00+00:00" in event.annotations[ORIGINAL_TIME_ANNOTATION]
    [decision] = triage(store, estate, [event], NOW)
    assert decision.action == "opened"


def test_ancient_time_is_clamped_to_the_oldest_allowed(store) -> None:
    from opsflow.itsm.records import EVENT_MAX_AGE

    store.events.store([alert(at=datetime(1, 1, 2, tzinfo=UTC))], NOW)
    [event] = store.events.pending(10)
    assert event.occurred_at == NOW - EVENT_MAX_AGE


def test_alert_with_only_instance_and_job_gets_the_ci_it_names(store, estate) -> None:
    labels = {"alertname": "InstanceDown", "instance": "127.0.99.2:9100", "job": "app"}
    unknown = {"alertname": "InstanceDown", "instance": "10.9.9.9:9100", "job": "node"}
    decisions = run(
        store,
        estate,
        alert(fingerprint="known", host=None, service=None, **labels),
        alert(fingerprint="unknown", host=None, service=None, **unknown),
    )
    assert [d.action for d in decisions] == ["opened", "opened"]
    known, other = (store.incidents.get(d.incident_number) for d in decisions)
    assert (known.host, known.service) == ("web2", "app")
    assert (other.host, other.service, other.runbook) == (None, "node", None)


def test_the_estate_says_which_labels_name_the_ci(store, estate) -> None:
    contract = LabelContract(host=["node"], instance=["target"], service=["app_name"])
    estate = estate.model_copy(
        update={"settings": estate.settings.model_copy(update={"labels": contract})}
    )
    by_target = {"target": "https://127.0.99.2:8443/health", "instance": "web1:9100"}
    decisions = run(
        store,
        estate,
        alert(fingerprint="node", host="web2", service="other", node="web1", app_name="app"),
        alert(fingerprint="target", host=None, service=None, app_name="app", **by_target),
    )
    incidents = [store.incidents.get(d.incident_number) for d in decisions]
    assert [(i.host, i.service) for i in incidents] == [("web1", "app"), ("web2", "app")]


RULES = [
    {
        "name": "app-jobs-down",
        "matchers": ['alertname="InstanceDown"', 'job=~"app|web-.*"', 'env!="test"'],
        "class": "exception",
        "symptom": "service-down",
    },
    {"name": "not-prod", "matchers": ['env!~"prod|"'], "class": "informational"},
]


@pytest.mark.parametrize(
    ("labels", "rule"),
    [
        ({"job": "app"}, "app-jobs-down"),
        ({"job": "web-frontend"}, "app-jobs-down"),
        ({"job": "myapp"}, "severity:none"),  # anchored: a part of the value is not enough
        ({"job": "app\n"}, "severity:none"),
        ({"job": "app", "env": "test"}, "not-prod"),
        ({"job": "app", "env": "prod"}, "app-jobs-down"),
        ({"job": "other", "env": "staging"}, "not-prod"),
    ],
    ids=["equal", "regex", "anchored", "newline", "not-equal", "absent-is-empty", "not-regex"],
)
def test_rules_match_as_alertmanager_matchers_do(store, estate, labels, rule) -> None:
    estate = estate.model_copy(update={"rules": [EventRule.model_validate(r) for r in RULES]})
    labels = {"alertname": "InstanceDown", "instance": "127.0.99.1:18080", **labels}
    [decision] = run(store, estate, alert(host=None, service=None, severity=None, **labels))
    assert decision.rule == rule


def test_a_regex_too_slow_fails_its_event_only(store, estate) -> None:
    slow = {"name": "slow", "matchers": ['summary=~"(.*a){25}"'], "class": "exception"}
    estate = estate.model_copy(update={"rules": [EventRule.model_validate(slow)]})
    hostile = alert(fingerprint="hostile", summary="a" * 2000 + "b")
    decisions = run(store, estate, hostile, alert(fingerprint="plain"))
    assert [d.action for d in decisions] == ["failed", "opened"]
    assert decisions[0].reason.startswith('MatchTimeoutError: summary=~"(.*a){25}": gave up')


def test_a_batch_is_bounded_by_bytes(store) -> None:
    big = {f"l{i}": "x" * 2000 for i in range(10)}  # ~20 kB of labels each
    store.events.store([alert(fingerprint=f"b{i}", **big) for i in range(10)], NOW)
    assert len(store.events.pending(100, max_bytes=50_000)) == 2
    assert len(store.events.pending(100, max_bytes=10)) == 1  # never zero: progress is made
    assert len(store.events.pending(100)) == 10
