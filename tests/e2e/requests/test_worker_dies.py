"""A worker process dies while a request it carries waits for approval: another worker
carries it on, approval window and all, and the approval then fulfills it."""

from __future__ import annotations

import signal
import subprocess

from opsflow.lab.hosts.probes import app_health
from tests.e2e.requests.conftest import Desk, carrier
from tests.e2e.requests.test_fulfillment import actions, paused_request, run_state
from tests.support.waiting import wait_for


def test_request_waiting_for_approval_survives_its_worker_dying(
    request_desk: Desk, two_workers: list[subprocess.Popen], lab, carol_pager
) -> None:
    pid_before = app_health(lab.host("lab02").address)["pid"]
    submitted = request_desk.submit(
        "carol", "request-service-restart-approved", service="app", host="lab02"
    )
    number = submitted["number"]
    waiting = paused_request(request_desk, number)
    dying = carrier(f"request:{submitted['id']}", two_workers)
    assert dying is not None, "a worker process carries the paused request"

    dying.send_signal(signal.SIGKILL)
    dying.wait(10)
    taken = wait_for(
        lambda: (
            (r := request_desk.show(number))["approval_run_id"] != waiting["approval_run_id"] and r
        ),
        30,
        f"the other worker to take {number} over",
    )
    assert run_state(waiting["approval_run_id"]) == "CRASHED"
    assert taken["state"] == "awaiting-approval"
    assert taken["approval_due_at"] == waiting["approval_due_at"], "the window goes on"
    takeover = next(e for e in taken["audit"] if e["action"].endswith(".taken_over"))
    assert takeover["after"]["state"] == "awaiting-approval"
    assert waiting["approval_run_id"] in takeover["after"]["crashed_runs"]
    survivor = next(p for p in two_workers if p is not dying)
    assert takeover["after"]["by"].split(":")[1] == str(survivor.pid)

    paused_request(request_desk, number)
    approved = request_desk.call(
        "POST", f"/requests/{number}/approve", "bob", json={"comment": "ok"}
    )
    assert approved.status_code == 200, approved.text
    done = request_desk.wait_state(number, {"fulfilled", "failed"})
    assert done["state"] == "fulfilled", done["outcome"]
    assert app_health(lab.host("lab02").address)["pid"] != pid_before
    assert ("bob", "approved") in actions(done)
