"""`opsflow up`'s supervisor on real processes: restarted when killed, given up on, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from opsflow.runtime.supervisor import SupervisionError, Supervisor
from tests.support.waiting import wait_for

SLEEPER = [sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"]


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie its new parent (init) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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


SUPERVISING = """
import os, signal, sys
from pathlib import Path
from opsflow.runtime.supervisor import Supervisor

sleeper = [sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"]
process = Supervisor(dict(os.environ)).start("sleeper", sleeper, Path(sys.argv[1]))
print(process.pid, flush=True)
signal.pause()  # until the test kills this process
"""


def test_a_killed_supervisor_leaves_no_process_behind(tmp_path: Path) -> None:
    supervising = subprocess.Popen(
        [sys.executable, "-c", SUPERVISING, str(tmp_path / "sleeper.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    log = tmp_path / "sleeper.log"
    try:
        pid = int(supervising.stdout.readline())
        # Running its own code: setpriv has set the parent-death signal before exec'ing it.
        wait_for(lambda: log.is_file() and "up" in log.read_text(), 30, "the sleeper to start")
        supervising.send_signal(signal.SIGKILL)
        supervising.wait(10)
        wait_for(lambda: not alive(pid), 10, "the sleeper to be stopped with its supervisor")
    finally:
        supervising.kill()
        supervising.wait(10)
