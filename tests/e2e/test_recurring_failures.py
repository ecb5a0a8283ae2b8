"""Problem Management on the closed loop: recurring failures of a lab service open a problem,
and the known error recorded for it restores the next failure through its workaround.

Real lab host, Prometheus, Alertmanager, desk and restoration (the session's fixtures); the
assertions hold whatever other tests left in the shared store before this one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.flows.problem_review import problem_review
from opsflow.itsm.records import Incident
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.people import token_file
from opsflow.tasks.services import check_service_health
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("monitoring")

SERVICE, SYMPTOM = "app", "service-down"
WORKAROUND = "recover-hung-service"
"""Not the estate's runbook for service-down (restart-service), so the test sees it applied."""

RESTORE_TIMEOUT_S = 90


def app_incidents(host: str) -> list[Incident]:
    return [
        i
        for i in open_records().incidents.list(host=host, service=SERVICE, limit=1000)
        if i.symptom == SYMPTOM
    ]


def resolved_alert_triaged(incident: Incident) -> bool:
    """Whether the all-clear of an alert that went to the incident has been triaged."""
    store = open_records()
    for fingerprint in {e.fingerprint for e in store.events.of_incident(incident.id)}:
        if any(
            e.status == "resolved" and e.triaged_at and e.occurred_at >= incident.opened_at
            for e in store.events.with_fingerprint(fingerprint)
        ):
            return True
    return False


def settled(host: str, seen: set[int]) -> Incident | None:
    """The new incident once restoration has resolved it or handed it to a human."""
    for incident in app_incidents(host):
        if incident.id not in seen and (incident.state == "Resolved" or incident.assigned_to):
            return incident
    return None


def fail_and_restore(lab, host: str) -> Incident:
    """Stop the lab's app for real and wait for the loop to restore it and the alert to clear."""
    seen = {i.id for i in app_incidents(host)}
    break_host(host, "service", lab.directory)
    incident = wait_for(lambda: settled(host, seen), RESTORE_TIMEOUT_S, f"{SYMPTOM} on {host}")
    assert incident.state == "Resolved", open_records().worklog.entries(incident.id)
    wait_for(lambda: resolved_alert_triaged(incident), 30, "the resolved alert, triaged")
    return open_records().incidents.get(incident.id)


def recurring_in_window(since: datetime) -> list[Incident]:
    return [
        i
        for i in open_records().incidents.opened_since(since)
        if (i.service, i.symptom) == (SERVICE, SYMPTOM) and i.state != "Canceled"
    ]


def open_problem_for_symptom():
    found = [
        p
        for p in open_records().problems.list_open()
        if (p.service, p.symptom) == (SERVICE, SYMPTOM)
    ]
    assert len(found) <= 1, "at most one open problem per service and symptom"
    return found[0] if found else None


def test_recurring_failures_open_a_problem_and_its_known_error_restores_the_next(
    lab, estate
) -> None:
    host = lab.hosts[0].name
    wait_for(
        lambda: not any(i.is_open for i in app_incidents(host)),
        60,
        f"no open {SYMPTOM} incident on {host} (a new failure would join it)",
    )
    failures = [fail_and_restore(lab, host) for _ in range(3)]
    assert [(i.runbook, i.resolution_code) for i in failures] == [
        ("restart-service", "auto-remediated")
    ] * 3

    # What the review will find: this test's three failures, plus whatever other tests left
    # unexplained for the same service and symptom, or an open problem already collecting them.
    since = datetime.now(UTC) - timedelta(days=7)
    unexplained = {i.id for i in recurring_in_window(since) if i.problem_id is None}
    assert {i.id for i in failures} <= unexplained
    already_open = open_problem_for_symptom()
    result = problem_review(window_days=7, threshold=3)

    problem = open_problem_for_symptom()
    assert problem is not None
    expected = unexplained | set(already_open.incident_ids if already_open else ())
    assert set(problem.incident_ids) == expected
    assert (problem.number in result["problems_opened"]) == (already_open is None)
    linked_now = result["incidents_linked"][problem.number]
    assert {i.number for i in failures} <= set(linked_now)

    desk_client = TestClient(create_app(open_records(), EstateCache(lab.estate_dir)))
    alice = {"Authorization": f"Bearer {token_file(lab.directory, 'alice').read_text().strip()}"}
    answer = desk_client.post(
        "/api/v1/known-errors",
        json={
            "service": SERVICE,
            "symptom": SYMPTOM,
            "host": host,  # only this host, so other tests' failures elsewhere are untouched
            "root_cause": "the app's pidfile outlives a crash, so a plain start can stall",
            "workaround": WORKAROUND,
            "problem": problem.number,
        },
        headers=alice,
    )
    assert answer.status_code == 201, answer.text
    known_error = answer.json()
    assert open_records().problems.get(problem.id).state == "Known Error"
    try:
        fourth = fail_and_restore(lab, host)
        assert fourth.runbook == WORKAROUND
        assert fourth.resolution_code == "workaround"
        assert fourth.resolution_notes.startswith(f"workaround of {known_error['number']}")
        assert (fourth.known_error_id, fourth.problem_id) == (known_error["id"], problem.id)
        assert check_service_health.fn(estate.host(host), estate.service(SERVICE)).healthy
        counted = wait_for(
            lambda: (k := open_records().known_errors.get(known_error["id"])).times_worked and k,
            30,
            "the workaround's success, counted",
        )
        assert (counted.times_applied, counted.times_worked) == (1, 1)
        worklog = [w.text for w in open_records().worklog.entries(fourth.id)]
        assert any(f"as the workaround of {known_error['number']}" in t for t in worklog)

        report = problem_review(window_days=7, threshold=3)["report"]
        signature = f"{SERVICE} / {SYMPTOM} on {host}"
        row = f"| {known_error['number']} | {signature} | {WORKAROUND} | 1 | 1 | 100% |"
        assert row in report
        assert open_records().problems.get(problem.id).incident_ids[-1] == fourth.id
        print(report)
    finally:
        # Later tests that break this host expect the estate's own runbook again.
        open_records().known_errors.retire(known_error["id"], "test", datetime.now(UTC))
