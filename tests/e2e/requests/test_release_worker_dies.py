"""The worker process carrying a rollout is SIGKILLed between two batches: another worker
takes the release over and rolls back the host already changed, so the release ends failed
with every host on the release it ran before, never half-done."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.probes import app_health, app_version
from opsflow.lab.hosts.releases import INITIAL_RELEASE
from opsflow.runtime.worker import Worker
from tests.e2e.requests.conftest import Desk, RequestEstate
from tests.support.prefect_api import run_state
from tests.support.serving import worker_process
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("initial_release")]


@pytest.fixture
def two_workers(
    request_desk: Desk, request_estate: RequestEstate, tmp_path: Path
) -> Iterator[list[subprocess.Popen]]:
    """Two worker processes on the same records and Prefect server, with 2 s leases, and no
    other worker while they run."""
    request_desk.session.worker.stop()
    try:
        with (
            worker_process(request_estate.directory, tmp_path / "worker-1.log") as first,
            worker_process(request_estate.directory, tmp_path / "worker-2.log") as second,
        ):
            yield [first, second]
    finally:
        request_desk.session.worker = Worker()
        request_desk.session.worker.start()


def test_a_rollout_whose_worker_is_killed_is_taken_over_and_rolled_back(
    request_desk: Desk, two_workers: list[subprocess.Popen], lab
) -> None:
    first, *others = lab.hosts
    pids = {h.name: app_health(h.address, timeout=2)["pid"] for h in others}
    body = {"service": "app", "version": "1.1.0", "batch": "1", "pause_s": 30}
    made = request_desk.call("POST", "/releases", "alice", json=body)
    assert made.status_code == 201, made.text
    number, release_id = made.json()["number"], made.json()["id"]
    releases = open_records().releases
    wait_for(
        lambda: (
            (r := releases.get(release_id)).host(first.name)
            and r.host(first.name).step == "deployed"
        ),
        90,
        f"{number} to finish its first host",
    )
    assert app_version(first.address, timeout=2) == "1.1.0"
    holder = open_records().leases.holder(f"release:{release_id}", datetime.now(UTC)) or ""
    dying = next(p for p in two_workers if holder.split(":")[1] == str(p.pid))
    dead_runs = releases.get(release_id).flow_run_ids

    dying.send_signal(signal.SIGKILL)  # while it pauses between batches
    dying.wait(10)
    done = wait_for(
        lambda: (r := releases.get(release_id)).state in ("deployed", "failed") and r,
        90,
        f"the other worker to take {number} over and end it",
    )
    assert done.state == "failed"
    assert done.outcome.startswith("interrupted: the run carrying it stopped mid-way")
    assert done.rollback.startswith("rollback complete: ")
    assert [(h.host, h.step) for h in done.hosts] == [(first.name, "rolled-back")] + [
        (h.name, "pending") for h in others
    ]
    assert {app_version(h.address, timeout=2) for h in lab.hosts} == {INITIAL_RELEASE}
    assert {h.name: app_health(h.address, timeout=2)["pid"] for h in others} == pids
    trail = releases.audit_trail(release_id)
    takeover = next(e for e in trail if e.action == "release.taken_over")
    survivor = next(p for p in two_workers if p is not dying)
    assert takeover.after["by"].split(":")[1] == str(survivor.pid)
    assert set(dead_runs) <= set(takeover.after["crashed_runs"])
    assert {run_state(r) for r in dead_runs} == {"CRASHED"}
