"""A worker's access runner: grants and revocations in threads, expiry at each grant's end."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsflow.desk.runners.access_changes import AccessRunner
from opsflow.itsm.access import AccessGrant, AccessRequestCreate, resolve_request
from opsflow.itsm.store.access import AccessGrants
from opsflow.itsm.store.records import Records
from tests.support.waiting import wait_for

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEHtfozhPTtl8AkMOSM3DVfaazlgK6iLBcy+DLgNv9iP"


def grant(grant_id: int, ends_in_s: float, state: str = "active") -> AccessGrant:
    now = datetime.now(UTC)
    return AccessGrant(
        id=grant_id,
        entitlement="web-login",
        privilege="login",
        host_group="web",
        requester="carol",
        username="carol",
        ssh_public_key=KEY,
        duration_minutes=1,
        state=state,
        requested_at=now,
        starts_at=now,
        ends_at=now + timedelta(seconds=ends_in_s),
    )


@pytest.fixture
def records_url(tmp_path: Any) -> str:
    """The runner's scheduling is the subject here, not the backend: SQLite only."""
    return f"sqlite:///{tmp_path / 'records.db'}"


@pytest.fixture
def grants(store: Records) -> AccessGrants:
    return store.access


def test_expiry_runs_once_each_grant_ends_and_stops_cleanly(store: Records) -> None:
    runs: list[datetime] = []

    def expire() -> None:
        runs.append(datetime.now(UTC))

    runner = AccessRunner(store, expire=expire)
    later, sooner = grant(2, 2.0), grant(1, 0.2)
    runner.schedule_expiry(later)
    runner.schedule_expiry(sooner)
    runner.schedule_expiry(grant(3, 60, state="approved"))  # not active: not scheduled
    runner.schedule_expiry(grant(4, 3600))  # far off: waited for when stop comes
    wait_for(lambda: len(runs) == 2, 10, "a run at each of the two ends")
    assert sooner.ends_at is not None and later.ends_at is not None
    assert sooner.ends_at <= runs[0] < later.ends_at <= runs[1], "each run after its end"
    runner.stop(timeout_s=5)
    expiring = [t for t in threading.enumerate() if t.name == "access-expiry"]
    assert expiring == [], "stop does not wait for far-off ends"
    assert len(runs) == 2, "no run for the grant that is not active, none after stop"


def test_a_failing_flow_is_logged_and_the_runner_carries_on(
    store: Records, grants: AccessGrants, estate: Any, caplog: Any
) -> None:
    def fail(grant_id: int, *_: Any) -> None:
        grants.record_error(grant_id, "host down", datetime.now(UTC), "test")
        raise RuntimeError("host down")

    carol = estate.person("carol")
    body = AccessRequestCreate(entitlement="web-login")
    asked = [grants.request(resolve_request(estate, carol, body), "carol", datetime.now(UTC))]
    asked.append(grants.request(resolve_request(estate, carol, body), "carol", datetime.now(UTC)))
    for grant in asked:
        grants.decide(grant.id, True, "bob", "", datetime.now(UTC))
    grants.request_revoke(asked[1].id, "carol", datetime.now(UTC))

    runner = AccessRunner(store, grant=fail, revoke=fail, expire=lambda: None)
    assert runner.run_next() == asked[0].id
    assert runner.wait_idle(5)
    assert runner.run_next() is None, "the other change was carried on in the same slot"
    runner.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert f"grant of access grant {asked[0].id} failed (recorded): host down" in messages
    assert f"revoke of access grant {asked[1].id} failed (recorded): host down" in messages
    assert [grants.get(g.id).state for g in asked] == ["approved", "approved"]
    assert grants.unclaimed() == [], "failed changes wait for a person or expire-access"
