"""The processes `opsflow up` keeps running: started, started again when one dies, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opsflow.errors import OpsError


class SupervisionError(OpsError):
    """A supervised process keeps exiting: starting it again will not help, a human must look."""


@dataclass
class _Child:
    argv: list[str]
    log: Path
    env: dict[str, str]
    process: subprocess.Popen
    stop_signal: signal.Signals | None = None
    stopped: bool = False
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Runs named processes, each in a session of its own with its output in a log file.

    One that exits is started again: the desk's requests and grants survive that (they are
    in the records, leased), the Prefect server keeps its state in PostgreSQL, and
    PostgreSQL replays its WAL. One that exits `max_restarts` times within `window_s` is
    given up on. If the supervising thread dies without stopping them (`opsflow up` killed),
    the kernel sends each its stop signal, so none is left holding a port or a database.
    """

    def __init__(
        self,
        env: dict[str, str],
        max_restarts: int = 3,
        window_s: float = 300.0,
        on_restart: Callable[[str, int], None] = lambda name, status: None,
    ) -> None:
        self._env = env
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._on_restart = on_restart
        self._children: dict[str, _Child] = {}

    def start(
        self,
        name: str,
        argv: list[str],
        log: Path,
        extra_env: dict[str, str] | None = None,
        *,
        env: dict[str, str] | None = None,
        stop_signal: signal.Signals | None = None,
    ) -> subprocess.Popen:
        """Start `argv` as `name`, appending its output to `log`.

        `extra_env` is added to the supervisor's environment for this process only (and its
        restarts): secrets travel in the environment, never on a command line that any local
        user can read in `/proc`. `env` replaces the supervisor's environment instead, for a
        process that must get none of opsflow's secrets (PostgreSQL). `stop_signal` is what
        stops the process cleanly, sent to it alone (PostgreSQL's fast shutdown is SIGINT to
        the postmaster, which then stops its own children); by default every process of its
        group is sent SIGTERM.
        """
        env = {**(self._env if env is None else env), **(extra_env or {})}
        child = _Child(argv, log, env, _spawn(argv, log, env, stop_signal), stop_signal)
        self._children[name] = child
        return child.process

    def process(self, name: str) -> subprocess.Popen:
        """The process running as `name` now."""
        return self._children[name].process

    def check(self) -> None:
        """Start again every process that exited; SupervisionError when one exits too often."""
        now = time.monotonic()
        for name, child in self._children.items():
            status = child.process.poll()
            if status is None or child.stopped:
                continue
            child.restarts = [t for t in child.restarts if now - t < self._window_s]
            if len(child.restarts) >= self._max_restarts:
                raise SupervisionError(
                    f"{name} exited {len(child.restarts) + 1} times within "
                    f"{self._window_s:.0f}s (last status {status}); see {child.log}"
                )
            child.restarts.append(now)
            self._on_restart(name, status)
            child.process = _spawn(child.argv, child.log, child.env, child.stop_signal)

    def stop(self, name: str, timeout_s: float = 15.0) -> None:
        """Stop `name` and everything it started (its stop signal, by default SIGTERM to its
        group; then SIGKILL to its group after `timeout_s`)."""
        child = self._children[name]
        child.stopped = True
        process = child.process
        if process.poll() is not None:
            return
        if child.stop_signal is None:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(child.stop_signal)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _spawn(
    argv: list[str], log: Path, env: dict[str, str], stop_signal: signal.Signals | None
) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    # setpriv sets the parent-death signal, then execs argv in the same process.
    death_signal = (stop_signal or signal.SIGTERM).name
    with log.open("ab") as out:
        return subprocess.Popen(
            ["setpriv", "--pdeathsig", death_signal, "--", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
