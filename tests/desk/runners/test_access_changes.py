"""A worker's access runner: grants and revocations in threads, expiry at each grant's end."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsflow.desk.runners.access_changes import AccessRunner
from opsflow.itsm.access import AccessGrant, AccessRequestCreate, resolve_request
from opsflow.itsm.store.access import AccessGrants
from opsflow.itsm.store.records import Records

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
    """The runner's timing is the subject here, not the backend: SQLite only."""
    return f"sqlite:///{tmp_path / 'records.db'}"


@pytest.fixture
def grants(store: Records) -> AccessGrants:
    return store.access


def test_expiry_runs_once_each_grant_ends_and_stops_cleanly(store: Records) -> None:
    runs: list[float] = []
    ran = threading.Event()

    def expire() -> None:
        runs.append(time.monotonic())
        ran.set()

    runner = AccessRunner(store, expire=expire)
    started = time.monotonic()
    runner.schedule_expiry(grant(2, 0.4))
    runner.schedule_expiry(grant(1, 0.2))
    runner.schedule_expiry(grant(3, 60, state="approved"))  # not active: not scheduled
    assert ran.wait(5)
    deadline = time.monotonic() + 5
    while not (runs and runs[-1] - started >= 0.4) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runs[0] - started >= 0.2, "no run before the first end"
    assert runs[-1] - started >= 0.4, "a run after the last end"
    assert len(runs) <= 2, "one run per end at most (fewer when ends fall together)"
    runner.schedule_expiry(grant(4, 3600))
    stopping = time.monotonic()
    runner.stop()
    assert time.monotonic() - stopping < 1, "stop does not wait for far-off ends"
    assert len(runs) <= 2


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
