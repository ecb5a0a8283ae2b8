"""Requests waiting for approval cost nothing per second and hold no slot of the worker's
task worker, and one person cannot fill the records with open requests.

The waiting test counts the HTTP calls this process (where the session's worker runs them)
makes to the Prefect server about flow runs while several real fulfillment runs are paused:
with Prefect's `pause_flow_run` each run polled once a second; now one shared check runs
every RESUME_CHECK_S, whatever their number.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.flows.paused_runs import RESUME_CHECK_S
from opsflow.itsm.store.records import Records
from opsflow.lab.people import token_file
from tests.e2e.requests.conftest import Desk
from tests.e2e.requests.test_fulfillment import paused_request
from tests.support.factories import NoWorkers
from tests.support.waiting import wait_for

WAITING = 3
WINDOW_S = 3.0
"""How long the calls are counted: a measurement window, not a wait for something to happen."""


def test_waiting_requests_do_not_poll_and_wake_on_a_decision(
    request_desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = [
        request_desk.submit("carol", "clear-old-logs", service="app")["number"]
        for _ in range(WAITING)
    ]
    for number in numbers:
        paused_request(request_desk, number)
    worker = request_desk.session.worker
    assert worker.requests.running >= WAITING, "the paused runs are the worker's"
    # Their wake-ups returned at once; under load the task worker may still be reporting
    # one's end to the API, so poll: a wake-up held by a paused request would never end.
    wait_for(
        lambda: worker.wake_ups_in_flight() == 0,
        15,
        "the task worker to hold no wake-up while the requests wait: restorations can run",
    )

    calls: list[str] = []
    send = httpx.Client.send

    def counted(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if "/flow_runs/" in request.url.path:
            calls.append(f"{request.method} {request.url.path}")
        return send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", counted)
    time.sleep(WINDOW_S)
    seen = list(calls)
    monkeypatch.undo()
    most = int(WINDOW_S / RESUME_CHECK_S) + 1
    assert len(seen) <= most, f"{WAITING} waiting runs made {len(seen)} calls: {seen}"

    for number in numbers:
        rejected = request_desk.call(
            "POST", f"/requests/{number}/reject", "bob", json={"comment": "no"}
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["state"] == "rejected", "the run was woken by the decision"


@pytest.fixture
def quota_desk(lab, tmp_path: Path, records_url: str) -> Iterator[TestClient]:
    """A desk over a copy of the lab's estate allowing 2 open requests a person; no worker
    carries its requests, so every request stays open."""
    estate = tmp_path / "estate"
    shutil.copytree(lab.estate_dir, estate)
    settings = yaml.safe_load((estate / "estate.yaml").read_text()) or {}
    settings["max_open_requests_per_person"] = 2
    (estate / "estate.yaml").write_text(yaml.safe_dump(settings))
    store = Records(records_url)
    app = create_app(store, EstateCache(estate))
    app.state.wake_ups = NoWorkers()
    with TestClient(app) as client:
        yield client


def test_one_person_hits_the_quota_and_others_still_submit(quota_desk: TestClient, lab) -> None:
    def submit(person: str) -> Any:
        token = token_file(lab.directory, person).read_text().strip()
        body = {"item": "clear-old-logs", "inputs": {"service": "app"}}
        return quota_desk.post(
            "/api/v1/requests", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    assert [submit("carol").status_code for _ in range(2)] == [201, 201]
    refused = submit("carol")
    assert refused.status_code == 429
    assert "max_open_requests_per_person = 2" in refused.json()["detail"]
    assert "carol has 2 open requests" in refused.json()["detail"]
    assert submit("bob").status_code == 201, "another person is not held back"
