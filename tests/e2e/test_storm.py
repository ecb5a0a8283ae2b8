"""Concurrent deliveries to the real desk: every event stored, one incident per alert."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from opsflow.itsm.store.records import open_records
from opsflow.lab.people import token_file
from tests.support.factories import webhook_body
from tests.support.waiting import wait_for

FIRING = webhook_body("firing.json")


def delivery(index: int) -> dict:
    """The same alert (host, service, symptom), as 200 distinct firings."""
    body = copy.deepcopy(FIRING)
    alert = body["alerts"][0]
    alert["labels"].update(host="ghost", service="app", alertname="ServiceDown")
    alert["fingerprint"] = f"{index:016x}"
    alert["startsAt"] = (datetime(2026, 11, 26, tzinfo=UTC) + timedelta(seconds=index)).isoformat()
    return body


def test_200_concurrent_deliveries_make_one_incident(lab_desk, lab) -> None:
    headers = {"Authorization": f"Bearer {token_file(lab.directory, 'alertmanager').read_text()}"}
    url = f"{lab_desk.url}/api/v1/events/alertmanager"

    def post(index: int) -> requests.Response:
        return requests.post(url, json=delivery(index), headers=headers, timeout=30)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(post, range(200)))
        repeats = list(pool.map(post, range(200)))
    assert {a.status_code for a in answers + repeats} == {202}
    assert sum(a.json()["stored"] for a in answers) == 200
    assert sum(a.json()["stored"] for a in repeats) == 0

    def the_incident():
        found = open_records().incidents.list(host="ghost")
        return found if found and found[0].event_count == 200 else None

    incidents = wait_for(the_incident, 60, "all 200 events triaged into the incident")
    assert len(incidents) == 1
    assert incidents[0].runbook is None, "an unknown host gets no automation"
    assert len(open_records().events.of_incident(incidents[0].id, limit=1000)) == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"version": "4", "status": "firing", "alerts": "nope"},
            [
                {
                    "loc": ["body", "alerts"],
                    "msg": "Input should be a valid list",
                    "type": "list_type",
                }
            ],
        ),
        (
            {"a": 1},
            [
                {"loc": ["body", field], "msg": "Field required", "type": "missing"}
                for field in ("version", "status", "alerts")
            ],
        ),
        (
            [],
            [
                {
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or instance of WebhookEnvelope",
                    "type": "model_type",
                }
            ],
        ),
    ],
    ids=["alerts-not-list", "wrong-shape", "empty-list"],
)
def test_hostile_bodies_over_http_get_422_naming_the_field(lab_desk, lab, body, detail) -> None:
    headers = {"Authorization": f"Bearer {token_file(lab.directory, 'alertmanager').read_text()}"}
    answer = requests.post(
        f"{lab_desk.url}/api/v1/events/alertmanager", json=body, headers=headers, timeout=10
    )
    assert (answer.status_code, answer.json()) == (422, {"detail": detail})
