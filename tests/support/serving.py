"""Serving for tests: free ports, an app served by uvicorn in a thread, and a desk or a worker
in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import uvicorn
from prefect.settings import PREFECT_API_URL

from tests.support import PROJECT
from tests.support.waiting import wait_for


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def serve_app(app: Any, log_level: str = "warning") -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free loopback port: its URL once it has
    started; stopped at the end of the block."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level=log_level)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the app to start")
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass
class ServedDesk:
    """A desk served in this process (`serve_app`): its URL, the worker that carries its work
    in this process too, and its triage dispatcher when it has one of its own."""

    url: str
    worker: Any
    dispatcher: Any = None


@dataclass
class DeskProcess:
    """A desk in a process of its own, which the test may kill."""

    process: subprocess.Popen
    url: str
    log: Path


def _opsflow_process(
    module: list[str], estate_dir: Path, log: Path, lease_s: float
) -> subprocess.Popen:
    """`python -m MODULE…` on this process's records and Prefect server and the estate in
    `estate_dir`, with leases of `lease_s`, its output in `log`."""
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "OPSFLOW_INVENTORY": str(estate_dir),
        "OPSFLOW_LEASE_SECONDS": str(lease_s),
    }
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *module],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def desk_process(estate_dir: Path, log: Path, lease_s: float = 2) -> Iterator[DeskProcess]:
    """Another desk (`python -m opsflow.desk.server`) on the same records and Prefect server, with
    short leases, once it answers; killed at the end."""
    port = free_port()
    process = _opsflow_process(
        ["opsflow.desk.server", "--port", str(port)], estate_dir, log, lease_s
    )
    desk = DeskProcess(process, f"http://127.0.0.1:{port}", log)

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return requests.get(f"{desk.url}/api/v1/health", timeout=1).ok
        except (requests.ConnectionError, requests.Timeout):  # not up, or not answering yet
            return False

    try:
        wait_for(answers, 60, "the other desk to start")
        yield desk
    finally:
        process.kill()
        process.wait(10)


@contextmanager
def worker_process(estate_dir: Path, log: Path, lease_s: float = 2) -> Iterator[subprocess.Popen]:
    """A worker (`python -m opsflow.runtime.worker`) on the same records and Prefect server,
    with short leases, once it serves; killed at the end."""
    process = _opsflow_process(["opsflow.runtime.worker"], estate_dir, log, lease_s)

    def serving() -> bool:
        assert process.poll() is None, log.read_text()
        return "worker serving" in log.read_text()

    try:
        wait_for(serving, 60, "the worker to serve")
        yield process
    finally:
        process.kill()
        process.wait(10)


@contextmanager
def two_workers_instead_of(
    desk: ServedDesk, estate_dir: Path, logs: Path
) -> Iterator[list[subprocess.Popen]]:
    """Two worker processes (`worker_process`, 2 s leases) on the same records and Prefect
    server, logging under `logs`, and no other worker while they run: the desk's in-process
    worker is stopped first and a new one started after."""
    from opsflow.runtime.worker import Worker

    desk.worker.stop()
    try:
        with (
            worker_process(estate_dir, logs / "worker-1.log") as first,
            worker_process(estate_dir, logs / "worker-2.log") as second,
        ):
            yield [first, second]
    finally:
        desk.worker = Worker()
        desk.worker.start()
