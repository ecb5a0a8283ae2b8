"""A worker process dies while putting an approved grant in place: another worker takes the
grant over and the access is in place, checked with the requester's own key."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.access.test_access import ALL, WEB, approve, ask, grant_when, logins, revoke
from tests.support.access_lab import Person
from tests.support.prefect_api import run_state
from tests.support.serving import two_workers_instead_of
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("access_env")


@pytest.fixture
def two_workers(
    access_desk: Any, access_estate_dir: Path, tmp_path: Path
) -> Iterator[list[subprocess.Popen]]:
    """Two worker processes on the access lab's records, with 2 s leases, and no other
    worker while they run."""
    with two_workers_instead_of(access_desk, access_estate_dir, tmp_path) as two:
        yield two


def test_a_worker_killed_mid_grant_leaves_the_grant_to_another(
    access_desk: Any,
    access_lab: Any,
    access_estate: Any,
    access_people: dict[str, Person],
    two_workers: list[subprocess.Popen],
) -> None:
    from opsflow.itsm.store.records import open_records

    carol, bob = access_people["carol"], access_people["bob"]
    grants, leases = open_records().access, open_records().leases
    grant = ask(access_desk, carol, "web-login", duration_minutes=60, reason="on call")
    by_pid = {process.pid: process for process in two_workers}

    def carrier() -> tuple[str, subprocess.Popen] | None:
        holder = leases.holder(f"grant:{grant['id']}", datetime.now(UTC)) or ""
        pid = int(holder.split(":")[1]) if holder.count(":") == 2 else None
        return (holder, by_pid[pid]) if pid in by_pid else None

    # lab05's sshd stopped: the grant's run waits on it mid-change, holding the account's
    # lock, so the worker is killed with the account half done and its lock held.
    stalled = access_lab.host("lab05").sshd_pid
    os.kill(stalled, signal.SIGSTOP)
    try:
        assert approve(access_desk, bob, grant["id"]).status_code == 202
        holder, dying = wait_for(carrier, 30, "a worker process to lease the grant")
        wait_for(
            lambda: leases.holder("user:carol", datetime.now(UTC)), 30, "its run to lock carol"
        )
        [dead_run] = grants.get(grant["id"]).flow_run_ids
        dying.send_signal(signal.SIGKILL)
        dying.wait(10)
    finally:
        os.kill(stalled, signal.SIGCONT)

    active = grant_when(access_desk, carol, grant["id"], lambda g: g["state"] == "active", 60)
    assert active["hosts"] == WEB
    assert logins(access_estate, ALL, carol) == {n: 0 if n in WEB else None for n in ALL}
    [taken] = [e for e in grants.audit_trail(grant["id"]) if e.action.endswith(".taken_over")]
    survivor = next(p for p in two_workers if p is not dying)
    assert taken.after["from"] == holder
    assert taken.after["by"].split(":")[1] == str(survivor.pid)
    assert taken.after["crashed_runs"] == [dead_run]
    assert run_state(dead_run) == "CRASHED"
    revoke(access_desk, carol, grant["id"])
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)
