"""A request and an approved grant are recorded together with the lease of the desk carrying
them, in one transaction of a real database (SQLite and PostgreSQL): no crash between the two
can leave one carried by nobody. The lease write is made to fail by a trigger in the database
itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from desk.api_access import AccessRunner
from desk.api_requests import RequestRunner
from desk.app import create_app
from desk.estate import EstateCache
from itsm.access_store import AccessStore, access_grants
from itsm.leases import leases
from itsm.request_store import RequestStore, service_requests
from itsm.store import Store
from lab.people import token_file

FAIL_LEASE_WRITES = {
    "sqlite": [
        "CREATE TRIGGER fail_lease_writes BEFORE INSERT ON leases "
        "BEGIN SELECT RAISE(ABORT, 'lease write failed'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_lease_write() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'lease write failed'; END $$",
        "CREATE TRIGGER fail_lease_writes BEFORE INSERT ON leases "
        "FOR EACH ROW EXECUTE FUNCTION fail_lease_write()",
    ],
}
STOP_FAILING_LEASE_WRITES = {
    "sqlite": ["DROP TRIGGER IF EXISTS fail_lease_writes"],
    "postgresql": ["DROP FUNCTION IF EXISTS fail_lease_write CASCADE"],
}


@dataclass
class CrashDesk:
    client: TestClient
    store: Store
    requests: RequestRunner
    access: AccessRunner
    lab_dir: Path

    def call(self, method: str, path: str, person: str, **kwargs: object):
        token = token_file(self.lab_dir, person).read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def lease_writes_fail(self, failing: bool) -> None:
        with self.store.write() as conn:
            statements = STOP_FAILING_LEASE_WRITES[self.store.dialect]
            if failing:
                statements = statements + FAIL_LEASE_WRITES[self.store.dialect]
            for statement in statements:
                conn.exec_driver_sql(statement)

    def rows(self) -> tuple[list, list, dict[str, str]]:
        """Requests, grants and leases as one read transaction sees them."""
        with self.store.read() as conn, conn.begin():
            requests = conn.execute(select(service_requests)).mappings().all()
            grants = conn.execute(select(access_grants)).mappings().all()
            held = {r.name: r.holder for r in conn.execute(select(leases))}
        return list(requests), list(grants), held


@pytest.fixture
def crash_desk(lab, records_url: str) -> Iterator[CrashDesk]:
    """The desk's app over a fresh records database; its runs wait until the test ends."""
    store = Store(records_url)
    done = threading.Event()
    app = create_app(store, EstateCache(lab.estate_dir))
    requests = app.state.request_runner = RequestRunner(
        RequestStore(store), run=lambda number: done.wait(30), lease_s=60
    )
    access = app.state.access_runner = AccessRunner(grant=lambda grant_id: done.wait(30))
    access.keep(AccessStore(store), lease_s=60)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield CrashDesk(client, store, requests, access, lab.directory)
    done.set()
    requests.wait_idle(30)
    access.stop()


def test_a_request_is_recorded_only_with_its_lease(crash_desk: CrashDesk, lab) -> None:
    body = {"item": "restart-service", "inputs": {"service": "app", "host": lab.hosts[0].name}}
    crash_desk.lease_writes_fail(True)
    refused = crash_desk.call("POST", "/requests", "carol", json=body)
    assert refused.status_code >= 500
    requests, _, held = crash_desk.rows()
    assert requests == [] and held == {}, "a failed lease write leaves neither"
    assert crash_desk.requests.running == 0, "its run slot was given back"

    crash_desk.lease_writes_fail(False)
    submitted = crash_desk.call("POST", "/requests", "carol", json=body)
    assert submitted.status_code == 201, submitted.text
    requests, _, held = crash_desk.rows()
    assert [r.id for r in requests] == [submitted.json()["id"]]
    assert held == {f"request:{requests[0].id}": crash_desk.requests.leases.holder}


def test_a_grant_is_approved_only_with_its_lease(crash_desk: CrashDesk) -> None:
    asked = crash_desk.call("POST", "/access-requests", "carol", json={"entitlement": "web-login"})
    assert asked.status_code == 201, asked.text
    grant_id = asked.json()["id"]
    crash_desk.lease_writes_fail(True)
    refused = crash_desk.call("POST", f"/access-requests/{grant_id}/approve", "bob")
    assert refused.status_code >= 500
    _, grants, held = crash_desk.rows()
    assert [g.state for g in grants] == ["requested"] and held == {}, (
        "a failed lease write leaves the grant requested and unleased"
    )

    crash_desk.lease_writes_fail(False)
    approved = crash_desk.call("POST", f"/access-requests/{grant_id}/approve", "bob")
    assert approved.status_code == 202, approved.text
    _, grants, held = crash_desk.rows()
    assert [g.state for g in grants] == ["approved"]
    assert held[f"grant:{grant_id}"] == crash_desk.access.lease_claim().holder
