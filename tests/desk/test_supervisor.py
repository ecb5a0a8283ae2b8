"""`opsflow up`'s supervisor on real processes: restarted when killed, given up on, stopped."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from desk.supervisor import SupervisionError, Supervisor
from tests.support import wait_for

SLEEPER = [sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(supervisor: Supervisor, name: str) -> int:
    process = supervisor.process(name)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    return process.pid


def test_a_killed_process_is_started_again_then_given_up_on(tmp_path: Path) -> None:
    restarted: list[tuple[str, int]] = []
    supervisor = Supervisor(
        dict(os.environ), max_restarts=2, on_restart=lambda n, s: restarted.append((n, s))
    )
    log = tmp_path / "sleeper.log"
    supervisor.start("sleeper", SLEEPER, log)
    try:
        for round_ in (1, 2):
            wait_for(lambda n=round_: log.read_text().count("up") == n, 10, f"start {round_}")
            dead = kill(supervisor, "sleeper")
            supervisor.check()
            assert supervisor.process("sleeper").pid != dead
            assert supervisor.process("sleeper").poll() is None
            assert restarted == [("sleeper", -signal.SIGKILL)] * round_
        wait_for(lambda: log.read_text().count("up") == 3, 10, "the third start")
        kill(supervisor, "sleeper")
        with pytest.raises(SupervisionError, match="sleeper exited 3 times within 300s"):
            supervisor.check()
    finally:
        supervisor.stop("sleeper")


def test_a_stopped_process_stays_stopped(tmp_path: Path) -> None:
    supervisor = Supervisor(dict(os.environ))
    pid = supervisor.start("sleeper", SLEEPER, tmp_path / "sleeper.log").pid
    supervisor.stop("sleeper")
    assert not alive(pid)
    supervisor.check()
    assert supervisor.process("sleeper").pid == pid, "stopping is not dying: no restart"
