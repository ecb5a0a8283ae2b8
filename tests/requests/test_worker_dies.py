"""A desk process dies while a request waits for approval: another desk carries it on."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.hosts import app_health
from tests.requests.conftest import Desk, RequestEstate, wait_for
from tests.requests.test_fulfilment import actions, paused_request, run_state
from tests.support import desk_process

pytestmark = pytest.mark.slow


@dataclass
class SecondDesk:
    """A desk in a process of its own, which the test may kill."""

    process: subprocess.Popen
    desk: Desk


@pytest.fixture
def second_desk(desk: Desk, request_estate: RequestEstate, tmp_path: Path) -> Iterator[SecondDesk]:
    """Another desk process on the same records and Prefect server, with 2 s leases."""
    with desk_process(request_estate.directory, tmp_path / "desk.log") as other:
        yield SecondDesk(other.process, Desk(other.url, request_estate.tokens))


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
