"""The monitoring's own processes on this machine: each started in its own session with a
clean environment, awaited until its readiness endpoint answers, and stopped (TERM, then
KILL, its process group too) only while its command line still names the monitoring's
directory, so a recycled PID is never signalled. Children are reaped: no zombies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from opsflow.errors import LabError
from opsflow.lab.exporter import proc_state

if TYPE_CHECKING:
    from collections.abc import Callable

# Processes this Python process started, kept so stop_processes can reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# Nothing here talks to anything but 127.0.0.1: never through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fail(message: str) -> NoReturn:
    """Raise the lab's error type."""
    raise LabError(message)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, output appended to `log`, with a bare PATH and locale."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
    _CHILDREN[proc.pid] = proc
    return proc


def local_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET on one of our own local endpoints."""
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    """Call `check` every `interval` s until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def await_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Wait until `url` answers 200; fail at once with the log's tail if `proc` exits first."""

    def ready() -> bool:
        if proc.poll() is not None:
            fail(f"{name} exited with status {proc.returncode}; {log} ends with:\n{_tail(log)}")
        try:
            return local_get(url, timeout=1.0)[0] == 200
        except OSError:
            return False

    poll(f"{name} at {url}", ready, timeout=20)


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` now."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _is_ours(pid: int, directory: Path) -> bool:
    """Whether `pid` is still one of our processes (its command line names our directory)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(directory).encode() in cmdline and proc_state(pid) not in (None, "Z")


def reap() -> None:
    """Collect the exit status of our children that ended, so none lingers as a zombie."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def stop_processes(pids: list[int], directory: Path) -> None:
    """TERM our processes (and their process groups), then KILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        reap()
        alive = [pid for pid in pids if _is_ours(pid, directory)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reap()
            if not any(_is_ours(pid, directory) for pid in alive):
                break
            time.sleep(0.05)
    reap()
    left = [pid for pid in pids if _is_ours(pid, directory)]
    if left:
        fail(f"monitoring processes survived SIGKILL: {left}")
