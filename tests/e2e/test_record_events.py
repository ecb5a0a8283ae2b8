"""Service requests and access grants tell Prefect's event feed what happens to them.

Through the desk and its workers on the lab, as people use them; each event read back from
the real Prefect server by the record it is about: submitted, approved, rejected, fulfilled
for requests; submitted, approved, rejected, granted, revoked, expired for access.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests
from prefect.settings import PREFECT_API_URL

from opsflow.lab.people import token_file
from tests.support.waiting import wait_for


def call(lab_desk, lab, person: str, method: str, path: str, **kwargs) -> dict:
    token = token_file(lab.directory, person).read_text()
    answer = requests.request(
        method,
        f"{lab_desk.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        **kwargs,
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


@pytest.fixture
def since() -> datetime:
    """When the test began: earlier events are other tests', for record numbers repeat
    across the session's databases (each test store starts at 1) and the Prefect server is one."""
    return datetime.now(UTC)


def events_about(resource_id: str, since: datetime) -> dict[str, dict]:
    """The Prefect events since the test began that name `resource_id` as a related
    resource, by event name."""
    answer = requests.post(
        f"{PREFECT_API_URL.value()}/events/filter",
        json={
            "filter": {
                "related": {"id": [resource_id]},
                "occurred": {"since": since.isoformat()},
            },
            "limit": 50,
        },
        timeout=10,
    )
    answer.raise_for_status()
    return {e["event"]: e for e in answer.json()["events"]}


def wait_for_events(
    resource_id: str, names: set[str], since: datetime, timeout_s: float = 90
) -> dict[str, dict]:
    return wait_for(
        lambda: (found := events_about(resource_id, since)).keys() >= names and found,
        timeout_s,
        f"events {sorted(names)} about {resource_id}",
    )


def test_a_request_approved_and_fulfilled_and_one_rejected_are_in_the_event_feed(
    lab_desk, lab, since
) -> None:
    host = lab.hosts[2].name
    body = {"item": "diagnostic-bundle", "inputs": {"host": host}}
    fulfilled = call(lab_desk, lab, "carol", "POST", "/requests", json=body)["number"]
    call(lab_desk, lab, "bob", "POST", f"/requests/{fulfilled}/approve", json={"comment": "ok"})
    rejected = call(lab_desk, lab, "carol", "POST", "/requests", json=body)["number"]
    call(lab_desk, lab, "bob", "POST", f"/requests/{rejected}/reject", json={"comment": "no"})

    events = wait_for_events(
        f"opsflow.request.{fulfilled}",
        {"opsflow.request.submitted", "opsflow.request.approved", "opsflow.request.fulfilled"},
        since,
    )
    done = events["opsflow.request.fulfilled"]
    assert done["resource"]["prefect.resource.id"] == "opsflow.catalog-item.diagnostic-bundle"
    assert done["payload"]["number"] == fulfilled and done["payload"]["state"] == "fulfilled"
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in done["related"]}
    assert roles["requester"] == "opsflow.person.carol"
    assert roles["approver"] == "opsflow.person.bob"

    events = wait_for_events(
        f"opsflow.request.{rejected}",
        {"opsflow.request.submitted", "opsflow.request.rejected"},
        since,
    )
    assert "opsflow.request.fulfilled" not in events


def test_access_granted_revoked_expired_and_rejected_are_in_the_event_feed(
    lab_desk, lab, since
) -> None:
    def ask(minutes: float) -> int:
        body = {"entitlement": "web-login", "duration_minutes": minutes, "reason": "events"}
        return call(lab_desk, lab, "carol", "POST", "/access-requests", json=body)["id"]

    revoked, expiring, rejected = ask(10), ask(0.05), ask(10)
    for grant in (revoked, expiring):
        call(lab_desk, lab, "bob", "POST", f"/access-requests/{grant}/approve", json={})
    call(lab_desk, lab, "bob", "POST", f"/access-requests/{rejected}/reject", json={})

    wait_for_events(
        f"opsflow.access-grant.{revoked}",
        {"opsflow.access.submitted", "opsflow.access.approved", "opsflow.access.granted"},
        since,
    )
    call(lab_desk, lab, "carol", "DELETE", f"/access-grants/{revoked}")
    events = wait_for_events(f"opsflow.access-grant.{revoked}", {"opsflow.access.revoked"}, since)
    gone = events["opsflow.access.revoked"]
    assert gone["resource"]["prefect.resource.id"] == "opsflow.entitlement.web-login"
    assert gone["resource"]["opsflow.host_group"] == "web"
    assert gone["payload"]["grant_id"] == revoked and gone["payload"]["state"] == "revoked"
    granted = events["opsflow.access.granted"]["payload"]
    assert granted["hosts"] and granted["ends_at"]

    wait_for_events(
        f"opsflow.access-grant.{expiring}",
        {"opsflow.access.granted", "opsflow.access.expired"},
        since,
    )
    events = wait_for_events(
        f"opsflow.access-grant.{rejected}",
        {"opsflow.access.submitted", "opsflow.access.rejected"},
        since,
    )
    assert "opsflow.access.granted" not in events
