"""Triage consults the known-error database first: a matching new incident gets the workaround."""

from __future__ import annotations

from datetime import timedelta

import pytest

from opsflow.inventory.loader import load_estate
from opsflow.itsm.problems import KnownErrorCreate
from opsflow.itsm.records import EventIn
from opsflow.itsm.triage import triage
from tests.support.factories import NOW

RUNBOOKS = ["recover-hung-service", "restart-service"]


@pytest.fixture
def estate(desk_estate):
    return load_estate(desk_estate)


def alert(host="web1", fingerprint="f1", at=NOW, **labels) -> EventIn:
    labels = {"alertname": "ServiceDown", "host": host, "service": "app", **labels}
    return EventIn(
        source="alertmanager",
        fingerprint=fingerprint,
        status="firing",
        host=host,
        service="app",
        labels=labels,
        summary=f"app down on {host}",
        occurred_at=at,
    )


def run(store, estate, *events: EventIn):
    store.events.store(list(events), NOW)
    return triage(store, estate, store.events.pending(100), NOW)


def add(store, **signature):
    fields = {
        "service": "app",
        "symptom": "service-down",
        "root_cause": "stale pidfile after a crash",
        "workaround": "recover-hung-service",
        **signature,
    }
    create = KnownErrorCreate(**fields)
    return store.known_errors.add(create, "olga", NOW, RUNBOOKS)


def test_a_matching_incident_is_linked_and_gets_the_workaround(store, estate) -> None:
    ke = add(store, host="web1")
    [decision] = run(store, estate, alert())
    assert (decision.action, decision.runbook, decision.known_error) == (
        "opened",
        "recover-hung-service",
        ke.number,
    )
    incident = store.incidents.get(decision.incident_number)
    assert (incident.known_error_id, incident.runbook) == (ke.id, "recover-hung-service")
    [note] = [w.text for w in store.worklog.entries(incident.id)]
    assert ke.number in note and "stale pidfile" in note


def test_no_match_keeps_the_estate_runbook(store, estate) -> None:
    add(store, host="web1")
    add(store, symptom="disk-full")
    [decision] = run(store, estate, alert(host="web2"))
    incident = store.incidents.get(decision.incident_number)
    assert (decision.runbook, decision.known_error) == ("restart-service", None)
    assert (incident.known_error_id, incident.runbook) == (None, "restart-service")


def test_labels_in_the_signature_must_match(store, estate) -> None:
    ke = add(store, labels={"severity": "critical"})
    [plain] = run(store, estate, alert(host="web2", severity="page"))
    [critical] = run(store, estate, alert(fingerprint="f2", severity="critical"))
    assert plain.known_error is None and critical.known_error == ke.number


def test_correlated_events_do_not_apply_it_again(store, estate) -> None:
    ke = add(store)
    decisions = run(
        store, estate, *(alert(fingerprint=f"f{i}", at=NOW + timedelta(seconds=i)) for i in (1, 2))
    )
    assert [(d.action, d.known_error) for d in decisions] == [
        ("opened", ke.number),
        ("correlated", None),
    ]
    assert len(store.worklog.entries(decisions[0].incident_id)) == 1


def test_a_retired_known_error_is_not_applied(store, estate) -> None:
    ke = add(store)
    store.known_errors.retire(ke.id, "olga", NOW)
    [decision] = run(store, estate, alert())
    assert (decision.runbook, decision.known_error) == ("restart-service", None)


def test_unknown_hosts_get_the_link_but_no_automation(store, estate) -> None:
    ke = add(store)
    [decision] = run(store, estate, alert(host="nowhere"))
    incident = store.incidents.get(decision.incident_number)
    assert (incident.known_error_id, incident.runbook) == (ke.id, None)
    assert "cannot run automatically" in store.worklog.entries(incident.id)[0].text
