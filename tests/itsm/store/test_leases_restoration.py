"""A restoration's claim and its incident's lease are one transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from opsflow.itsm.records import Incident, IncidentCreate, IncidentUpdate
from opsflow.itsm.store.leases import Leases, restoration_lease
from opsflow.itsm.store.records import Records

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def leases(store: Records) -> Leases:
    return store.leases


def open_incident(store: Records, key: str, runbook: str | None = "restart-service") -> Incident:
    incident, _ = store.correlation.open_or_correlate(
        IncidentCreate(
            host="lab01",
            service="app",
            symptom="service-down",
            summary="down",
            impact=2,
            urgency=2,
            runbook=runbook,
            correlation_key=key,
        ),
        T0,
        actor="test",
    )
    return incident


def test_one_restoration_claims_an_incident_until_its_lease_lapses(
    store: Records, leases: Leases
) -> None:
    incident = open_incident(store, "k1")
    first = leases.claim_restoration(incident.number, "run-a", 30, "test", "fr-a", now=at(1))
    assert first.claimed and first.holder == "run-a"
    assert (first.incident.state, first.incident.flow_run_ids) == ("In Progress", ["fr-a"])
    assert store.audit.trail("incident", incident.id)[-1].action == "incident.in_progress"

    second = leases.claim_restoration(incident.number, "run-b", 30, "test", "fr-b", now=at(2))
    assert (second.claimed, second.holder) == (False, "run-a")
    assert second.incident.flow_run_ids == ["fr-a"], "a refused claim changes nothing"

    again = leases.claim_restoration(incident.number, "run-a", 30, "test", "fr-a", now=at(3))
    assert again.claimed, "its own holder may claim again (a failure hook does)"

    taken = leases.claim_restoration(incident.number, "run-b", 30, "test", "fr-b", now=at(40))
    assert taken.claimed, "a dead restoration's lease lapses and another takes it over"
    assert taken.incident.flow_run_ids == ["fr-a", "fr-b"]


def test_an_incident_not_new_or_in_progress_is_not_claimed_nor_leased(
    store: Records, leases: Leases
) -> None:
    incident = open_incident(store, "k2")
    store.incidents.update(
        incident.id, IncidentUpdate(state="On Hold", hold_reason="vendor"), "alice", at(1)
    )
    claim = leases.claim_restoration(incident.number, "run-a", 30, "test", "fr-a", now=at(2))
    assert (claim.claimed, claim.holder, claim.incident.state) == (False, None, "On Hold")
    assert leases.holder(restoration_lease(incident.id), at(2)) is None


def test_new_incidents_with_a_runbook_and_no_lease_are_unclaimed(
    store: Records, leases: Leases
) -> None:
    waiting = open_incident(store, "k3")
    claimed = open_incident(store, "k4")
    open_incident(store, "k5", runbook=None)
    leases.claim_restoration(claimed.number, "run-a", 30, "test", now=at(1))
    assert leases.unclaimed_restorations(opened_before=T0) == [], "not before a grace period"
    assert leases.unclaimed_restorations(opened_before=at(5)) == [restoration_lease(waiting.id)]


def test_renewing_tells_a_holder_whether_it_still_holds_its_lease(
    store: Records, leases: Leases
) -> None:
    incident = open_incident(store, "k6")
    name = restoration_lease(incident.id)
    leases.claim_restoration(incident.number, "run-a", 30, "test", now=at(1))
    assert leases.renew("run-a", [name], at(31)) == {name}

    assert leases.take(name, "desk-b", at(40), 30), "run-a stalled: its lease lapsed"
    assert leases.renew("run-a", [name], at(45)) == set(), "taken over: run-a must stop"
    assert leases.holder(name, at(45)) == "desk-b"


def test_an_escalated_incident_is_left_to_its_on_call(store: Records, leases: Leases) -> None:
    incident = open_incident(store, "k7")
    leases.claim_restoration(incident.number, "run-a", 30, "test", now=at(1))
    store.incidents.update(
        incident.id, IncidentUpdate(state="In Progress", assigned_to="alice"), "test", at(2)
    )
    claim = leases.claim_restoration(incident.number, "run-a", 30, "test", now=at(3))
    assert not claim.claimed, "not even by the run that escalated it (its failure hook)"
    later = leases.claim_restoration(incident.number, "desk-b", 30, "test", now=at(60))
    assert not later.claimed, "nor by a desk once the lease lapsed"

    assigned = open_incident(store, "k8")
    store.incidents.update(assigned.id, IncidentUpdate(assigned_to="bob"), "bob", at(2))
    assert leases.unclaimed_restorations(opened_before=at(5)) == []


def test_racing_restorations_claim_an_incident_once(store: Records, leases: Leases) -> None:
    incident = open_incident(store, "k-race")
    claims: list[tuple[str, bool]] = []

    def claim(holder: str) -> None:
        result = leases.claim_restoration(incident.number, holder, 30, "test", holder, now=at(1))
        claims.append((holder, result.claimed))

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [holder for holder, claimed in claims if claimed]
    assert len(claims) == 8 and len(winners) == 1
    record = store.incidents.get(incident.id)
    assert record.flow_run_ids == winners
    assert leases.holder(restoration_lease(incident.id), at(2)) == winners[0]
