"""A request or an approved grant is carried even when no wake-up reaches a worker: the desk
records it and answers, and a worker's sweep takes it up once it waited a lease; workers
woken together carry each item once; paused requests never hold the wake-up. On a real
database (SQLite and PostgreSQL), with the flows stood in for by functions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.desk.runners.access_changes import AccessRunner
from opsflow.desk.runners.fulfillments import RequestRunner
from opsflow.itsm.store.leases import leases
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.requests import Requests
from opsflow.lab.people import token_file
from tests.support.waiting import wait_for

LEASE_S = 1.0


@dataclass
class LostWakeUps:
    """Wake-ups that reach nobody, as when the desk dies right after its commit."""

    sent: list[str] = field(default_factory=list)

    def request_submitted(self) -> None:
        self.sent.append("fulfill-request")

    def access_changed(self) -> None:
        self.sent.append("provision-access")


@dataclass
class Desk:
    client: TestClient
    store: Records
    wake_ups: LostWakeUps
    lab_dir: Path

    def call(self, method: str, path: str, person: str, **kwargs: object):
        token = token_file(self.lab_dir, person).read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def held(self) -> dict[str, str]:
        with self.store.db.read() as conn:
            return {r.name: r.holder for r in conn.execute(select(leases))}


@pytest.fixture
def desk_losing_wake_ups(lab, records_url: str) -> Iterator[Desk]:
    """The desk's app over a fresh records database; its wake-ups reach nobody."""
    store = Records(records_url)
    app = create_app(store, EstateCache(lab.estate_dir))
    app.state.wake_ups = LostWakeUps()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Desk(client, store, app.state.wake_ups, lab.directory)


def finish(requests: Requests, carried: list[str]):
    """A stand-in fulfillment: note the request and close it."""

    def run(number: str) -> None:
        carried.append(number)
        requests.move(number, "failed", "test", datetime.now(UTC), outcome="stood in for")

    return run


def test_a_request_whose_wake_up_is_lost_is_taken_up_by_a_sweep(
    desk_losing_wake_ups: Desk, lab
) -> None:
    body = {
        "item": "request-service-restart",
        "inputs": {"service": "app", "host": lab.hosts[0].name},
    }
    submitted = desk_losing_wake_ups.call("POST", "/requests", "carol", json=body)
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["state"] == "submitted"
    assert desk_losing_wake_ups.wake_ups.sent == ["fulfill-request"]
    assert desk_losing_wake_ups.held() == {}, "recorded with no lease: it waits for a worker"

    requests = desk_losing_wake_ups.store.requests
    carried: list[str] = []
    runner = RequestRunner(
        desk_losing_wake_ups.store, run=finish(requests, carried), lease_s=LEASE_S
    )
    assert runner.leases.take_over_lapsed() == [], "not before it waited a lease"
    time.sleep(LEASE_S)
    assert runner.leases.take_over_lapsed() == [f"request:{submitted.json()['id']}"]
    assert runner.wait_idle(10)
    number = submitted.json()["number"]
    assert carried == [number]
    trail = [e.action for e in requests.audit_trail(number)]
    assert "service_request.taken_up" in trail and trail[-1] == "service_request.failed"
    assert desk_losing_wake_ups.held() == {}, "given back once carried"


def test_an_approved_grant_whose_wake_up_is_lost_is_put_in_place_by_a_sweep(
    desk_losing_wake_ups: Desk,
) -> None:
    asked = desk_losing_wake_ups.call(
        "POST", "/access-requests", "carol", json={"entitlement": "web-login"}
    )
    assert asked.status_code == 201, asked.text
    grant_id = asked.json()["id"]
    approved = desk_losing_wake_ups.call("POST", f"/access-requests/{grant_id}/approve", "bob")
    assert approved.status_code == 202, approved.text
    assert approved.json()["state"] == "approved"
    assert (
        desk_losing_wake_ups.wake_ups.sent == ["provision-access"]
        and desk_losing_wake_ups.held() == {}
    )

    grants = desk_losing_wake_ups.store.access
    put: list[int] = []

    def grant(grant_id: int) -> None:
        put.append(grant_id)
        grants.activate(grant_id, ["lab01"], datetime.now(UTC), "test")

    runner = AccessRunner(
        desk_losing_wake_ups.store, grant=grant, expire=lambda: None, lease_s=LEASE_S
    )
    time.sleep(LEASE_S)
    assert runner.leases.take_over_lapsed() == [f"grant:{grant_id}"]
    assert runner.wait_idle(10)
    runner.stop()
    assert put == [grant_id] and grants.get(grant_id).state == "active"
    assert "access_grant.taken_up" in [e.action for e in grants.audit_trail(grant_id)]

    revoked = desk_losing_wake_ups.call("DELETE", f"/access-grants/{grant_id}", "carol")
    assert revoked.status_code == 202, revoked.text
    assert desk_losing_wake_ups.wake_ups.sent == ["provision-access", "provision-access"]
    taken: list[tuple[int, str]] = []

    def revoke(grant_id: int, actor: str) -> None:
        taken.append((grant_id, actor))
        grants.end(grant_id, "revoked", datetime.now(UTC), "test")

    runner = AccessRunner(
        desk_losing_wake_ups.store, revoke=revoke, expire=lambda: None, lease_s=LEASE_S
    )
    assert runner.run_next() == grant_id, "a wake-up takes it up at once"
    assert runner.wait_idle(10)
    assert taken == [(grant_id, "carol")] and grants.get(grant_id).state == "revoked"
    runner.stop()


def test_workers_woken_together_carry_each_request_once(records_url: str) -> None:
    store = Records(records_url)
    requests = store.requests
    numbers = [
        requests.create("clear-old-logs", {}, "carol", "none", "carol", datetime.now(UTC)).number
        for _ in range(6)
    ]
    carried: list[str] = []
    runners = [RequestRunner(store, run=finish(requests, carried)) for _ in range(3)]
    wake_ups = [threading.Thread(target=r.run_next) for r in runners for _ in numbers]
    for thread in wake_ups:
        thread.start()
    for thread in wake_ups:
        thread.join(30)
    assert all(runner.wait_idle(30) for runner in runners)
    assert sorted(carried) == numbers, "each request carried exactly once"
    assert requests.unclaimed() == []


def test_paused_requests_hold_no_wake_up_and_a_freed_slot_takes_the_next(
    records_url: str,
) -> None:
    store = Records(records_url)
    requests = store.requests
    numbers = [
        requests.create("clear-old-logs", {}, "carol", "one", "carol", datetime.now(UTC)).number
        for _ in range(3)
    ]
    decided = {number: threading.Event() for number in numbers}
    started: list[str] = []

    def wait_for_approver(number: str) -> None:
        started.append(number)
        decided[number].wait(30)
        requests.move(number, "rejected", "bob", datetime.now(UTC), approver="bob")

    runner = RequestRunner(store, run=wait_for_approver, max_running=2)
    assert runner.run_next() is not None and runner.run_next() is not None
    states = [requests.get(number).state for number in numbers]
    assert "rejected" not in states, "a wake-up returns at once, while its run waits on"
    assert runner.run_next() is None, "max_running requests run here: the third waits"
    wait_for(lambda: len(started) == 2, 10, "two paused requests")
    decided[started[0]].set()
    wait_for(lambda: len(started) == 3, 10, "the freed slot to take the third request")
    assert sorted(started) == numbers
    for event in decided.values():
        event.set()
    assert runner.wait_idle(10)
    assert [requests.get(number).state for number in numbers] == ["rejected"] * 3
    assert requests.unclaimed() == []
