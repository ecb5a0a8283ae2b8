"""A desk process dies while a request waits for approval: another desk carries it on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prefect.settings import PREFECT_API_URL

from lab.hosts import app_health
from tests.requests.conftest import Desk, RequestEstate, wait_for
from tests.requests.test_fulfilment import actions, paused_request, run_state
from tests.support import free_port

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class SecondDesk:
    """A desk in a process of its own, which the test may kill."""

    process: subprocess.Popen
    desk: Desk


@pytest.fixture
def second_desk(desk: Desk, request_estate: RequestEstate, tmp_path: Path) -> Iterator[SecondDesk]:
    """Another desk process on the same records and Prefect server, with 2 s leases."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "OPSFLOW_INVENTORY": str(request_estate.directory),
        "OPSFLOW_LEASE_SECONDS": "2",
    }
    log = (tmp_path / "desk.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "desk.server", "--port", str(port)],
        cwd=PROJECT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    other = SecondDesk(process, Desk(f"http://127.0.0.1:{port}", request_estate.tokens))

    def answers() -> bool:
        assert process.poll() is None, (tmp_path / "desk.log").read_text()
        try:
            return requests.get(f"{other.desk.url}/api/v1/health", timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(answers, 60, "the second desk to start")
    yield other
    process.kill()
    process.wait(10)
    log.close()


def test_request_waiting_for_approval_survives_its_desk_dying(
    desk: Desk, second_desk: SecondDesk, lab, carol_pager
) -> None:
    pid_before = app_health(lab.host("lab02").address)["pid"]
    number = second_desk.desk.submit(
        "carol", "restart-service-approved", service="app", host="lab02"
    )["number"]
    waiting = paused_request(second_desk.desk, number)

    second_desk.process.send_signal(signal.SIGKILL)
    second_desk.process.wait(10)
    taken = wait_for(
        lambda: (r := desk.show(number))["approval_run_id"] != waiting["approval_run_id"] and r,
        30,
        f"a living desk to take {number} over",
    )
    assert run_state(waiting["approval_run_id"]) == "CRASHED"
    assert taken["state"] == "awaiting-approval"
    assert taken["approval_due_at"] == waiting["approval_due_at"], "the window goes on"
    takeover = next(e for e in taken["audit"] if e["action"].endswith(".taken_over"))
    assert takeover["after"]["state"] == "awaiting-approval"
    assert waiting["approval_run_id"] in takeover["after"]["crashed_runs"]

    paused_request(desk, number)
    approved = desk.call("POST", f"/requests/{number}/approve", "bob", json={"comment": "ok"})
    assert approved.status_code == 200, approved.text
    done = desk.wait_state(number, {"fulfilled", "failed"})
    assert done["state"] == "fulfilled", done["outcome"]
    assert app_health(lab.host("lab02").address)["pid"] != pid_before
    assert ("bob", "approved") in actions(done)
