"""The desk's access runner: grants and revocations in threads, expiry at each grant's end."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from desk.api_access import AccessRunner
from itsm.access import AccessGrant

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


def test_expiry_runs_once_each_grant_ends_and_stops_cleanly() -> None:
    runs: list[float] = []
    ran = threading.Event()

    def expire() -> None:
        runs.append(time.monotonic())
        ran.set()

    runner = AccessRunner(expire=expire)
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


def test_a_failing_flow_is_logged_and_the_runner_carries_on(caplog: Any) -> None:
    def fail(*_: Any) -> None:
        raise RuntimeError("host down")

    class Grants:
        def get(self, grant_id: int) -> AccessGrant:
            raise AssertionError("a failed grant is not scheduled for expiry")

    runner = AccessRunner(grant=fail, revoke=fail)
    runner.grant(7, Grants()).result(5)  # type: ignore[arg-type]
    runner.revoke(7, "carol").result(5)
    runner.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert "granting access grant 7 failed (recorded on the grant)" in messages
    assert "revoking access grant 7 failed; expiry will retry" in messages
