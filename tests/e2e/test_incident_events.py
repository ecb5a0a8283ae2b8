"""Opening and changing an incident shows up in Prefect's event feed, on the CI's resource."""

from __future__ import annotations

import requests

from opsflow.lab.people import token_file
from tests.support.prefect_api import prefect_events
from tests.support.waiting import wait_for


def test_opened_and_resolved_incident_events(lab_desk, lab) -> None:
    def headers(person: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_file(lab.directory, person).read_text()}"}

    incident = requests.post(
        f"{lab_desk.url}/api/v1/incidents",
        json={
            "host": "lab03",
            "service": "app",
            "symptom": "feed-test",
            "summary": "feed",
            "impact": 3,
            "urgency": 3,
        },
        headers=headers("carol"),
        timeout=10,
    ).json()
    requests.patch(
        f"{lab_desk.url}/api/v1/incidents/{incident['number']}",
        json={"state": "Resolved", "resolution_code": "no-fault", "resolution_notes": "fine"},
        headers=headers("alice"),
        timeout=10,
    ).raise_for_status()

    def about_it(change: str) -> list[dict]:
        return [
            e
            for e in prefect_events(f"opsflow.incident.{change}")
            if e["payload"].get("number") == incident["number"]
        ]

    [opened] = wait_for(lambda: about_it("opened"), 30, "the opened event in Prefect")
    [resolved] = wait_for(lambda: about_it("resolved"), 30, "the resolved event in Prefect")
    assert opened["resource"]["prefect.resource.id"] == "opsflow.ci.app@lab03"
    assert resolved["payload"]["state"] == "Resolved"
