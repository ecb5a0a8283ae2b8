"""The worker process carrying a rollout is SIGKILLed while a host is mid-step, inside that
host's maintenance window: another worker takes the release over, rolls back every host
changed and closes the windows the dead run left open, so the release ends failed with every
host on the release it ran before, never half-done, and no window of it suppresses that
host's alerts afterwards."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client

from opsflow.flows.routine_ops.health_check import health_event
from opsflow.itsm.store.maintenance import DeclaredWindow
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.probes import app_health, app_version
from opsflow.lab.hosts.releases import INITIAL_RELEASE
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.concurrency import slot_name
from opsflow.tasks.maintenance import DEFAULT_GRACE_S
from opsflow.tasks.services import HealthResult
from tests.e2e.requests.conftest import Desk, carrier
from tests.support.prefect_api import run_state
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("initial_release")]

NEW_RELEASE = "1.1.0"


@pytest.fixture
def gate_fails_on_second_host(lab) -> Iterator[str]:
    """The second lab host's copy of the new release answers /health 503, so a rollout stays
    inside that host's step (and window) for its whole gate deadline: long enough to be
    killed there. Its name; the release is made good again afterwards."""
    host = lab.hosts[1].name
    conf = f"/var/lib/app/releases/{NEW_RELEASE}/release.conf"

    def set_defect(defect: str) -> None:
        done = run_on_host(
            host, ["sed", "-i", f"s/^DEFECT=.*$/DEFECT={defect}/", conf], lab.directory
        )
        assert done.returncode == 0, done.stderr

    set_defect("badhealth")
    try:
        yield host
    finally:
        set_defect("")


def free_slot_of_killed_run(window: DeclaredWindow, killed_at: datetime) -> None:
    """Free the host's slot the killed run held inside `window`, as the Prefect server's
    repossessor does once the slot's lease lapses (`tasks.concurrency.SLOT_LEASE_S` and a 15 s
    pass): this session's server is an ephemeral one, which runs no repossessor, so without
    this the taker would wait for the host until its slot wait runs out."""
    held_s = max((killed_at - window.start).total_seconds(), 0.001)
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots(
            [slot_name(window.hosts[0])], slots=1, occupancy_seconds=held_s
        )


def windows_of(runs: list[str], at: datetime) -> list[DeclaredWindow]:
    """The maintenance windows the runs `runs` declared that hold at `at` or later."""
    found = open_records().maintenance.between(at, at + timedelta(days=1))
    return [w for w in found if w.flow_run_id in runs]


def triaged(fingerprint: str, occurred_at: datetime):
    """The event of `fingerprint` that occurred at `occurred_at`, once triage decided it."""
    events = open_records().events.with_fingerprint(fingerprint)
    return next((e for e in events if e.occurred_at == occurred_at and e.triaged_at), None)


def test_a_rollout_whose_worker_is_killed_is_taken_over_and_rolled_back(
    request_desk: Desk, two_workers: list[subprocess.Popen], gate_fails_on_second_host, lab
) -> None:
    first, second, *others = lab.hosts
    assert second.name == gate_fails_on_second_host
    pids = {h.name: app_health(h.address, timeout=2)["pid"] for h in others}
    body = {"service": "app", "version": NEW_RELEASE, "batch": "1"}
    made = request_desk.call("POST", "/releases", "alice", json=body)
    assert made.status_code == 201, made.text
    number, release_id = made.json()["number"], made.json()["id"]
    releases = open_records().releases

    def inside_second_step() -> DeclaredWindow | None:
        runs = releases.get(release_id).flow_run_ids
        now = datetime.now(UTC)
        held = [w for w in windows_of(runs, now) if w.covers(second.name, now) and not w.closed_at]
        restarted = held and app_version(second.address, timeout=2) == NEW_RELEASE
        return held[0] if restarted else None

    window = wait_for(inside_second_step, 90, f"{number} to restart {second.name} in its window")
    assert releases.get(release_id).host(first.name).step == "deployed"
    assert app_version(first.address, timeout=2) == NEW_RELEASE
    dying = carrier(f"release:{release_id}", two_workers)
    assert dying is not None, "a worker process carries the release"
    dead_runs = releases.get(release_id).flow_run_ids

    dying.send_signal(signal.SIGKILL)  # while the second host waits for its health gate
    dying.wait(10)
    killed_at = datetime.now(UTC)
    free_slot_of_killed_run(window, killed_at)
    done = wait_for(
        lambda: (r := releases.get(release_id)).state in ("deployed", "failed") and r,
        90,
        f"the other worker to take {number} over and end it",
    )
    assert done.state == "failed"
    assert done.outcome.startswith("interrupted: the run carrying it stopped mid-way")
    assert done.rollback.startswith("rollback complete: ")
    assert [(h.host, h.step) for h in done.hosts] == [
        (first.name, "rolled-back"),
        (second.name, "rolled-back"),
    ] + [(h.name, "pending") for h in others]
    assert {app_version(h.address, timeout=2) for h in lab.hosts} == {INITIAL_RELEASE}
    assert {h.name: app_health(h.address, timeout=2)["pid"] for h in others} == pids
    trail = releases.audit_trail(release_id)
    takeover = next(e for e in trail if e.action == "release.taken_over")
    survivor = next(p for p in two_workers if p is not dying)
    assert takeover.after["by"].split(":")[1] == str(survivor.pid)
    assert set(dead_runs) <= set(takeover.after["crashed_runs"])
    assert {run_state(r) for r in dead_runs} == {"CRASHED"}

    # No window of the release is left open: the dead run's window over the second host
    # (declared for 15 min) was closed by the taker, and every window ends within the grace
    # that covers the late-stamped alerts of the last restart.
    now = datetime.now(UTC)
    left = windows_of(done.flow_run_ids, killed_at)
    assert any(w.flow_run_id in dead_runs and second.name in w.hosts for w in left)
    assert [w.label for w in left if w.closed_at is None] == []
    assert all(w.end <= now + timedelta(seconds=DEFAULT_GRACE_S) for w in left)

    # Once they end, an alert on the second host opens an incident instead of being suppressed.
    last_end = max(w.end for w in left)
    wait_for(lambda: datetime.now(UTC) > last_end, DEFAULT_GRACE_S + 10, "the windows to end")
    at = datetime.now(UTC)
    down = HealthResult(
        host=second.name, service="app", healthy=False, detail="refused", latency_ms=1.0
    )
    event = health_event(down, at)
    sent = request_desk.call(
        "POST", "/events", "routine-jobs", json=[event.model_dump(mode="json")]
    )
    assert sent.status_code == 202, sent.text
    decided = wait_for(lambda: triaged(event.fingerprint, at), 30, "triage of the alert")
    assert decided.incident_id is not None, decided.rule
    assert "deploy-release #" not in (decided.rule or "")
    # The desk restores it (the app runs, so its runbook changes nothing) before the next test.
    incidents = open_records().incidents
    wait_for(lambda: not incidents.get(decided.incident_id).is_open, 90, "the incident to close")
