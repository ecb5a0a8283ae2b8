"""Serving for tests: free ports, and a desk or a worker in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from prefect.settings import PREFECT_API_URL

from tests.support import PROJECT
from tests.support.waiting import wait_for


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DeskProcess:
    """A desk in a process of its own, which the test may kill."""

    process: subprocess.Popen
    url: str
    log: Path


@contextmanager
def desk_process(estate_dir: Path, log: Path, lease_s: float = 2) -> Iterator[DeskProcess]:
    """Another desk (`python -m opsflow.desk.server`) on the same records and Prefect server, with
    short leases, once it answers; killed at the end."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "OPSFLOW_INVENTORY": str(estate_dir),
        "OPSFLOW_LEASE_SECONDS": str(lease_s),
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "opsflow.desk.server", "--port", str(port)],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
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
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "OPSFLOW_INVENTORY": str(estate_dir),
        "OPSFLOW_LEASE_SECONDS": str(lease_s),
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "opsflow.runtime.worker"],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def serving() -> bool:
        assert process.poll() is None, log.read_text()
        return "worker serving" in log.read_text()

    try:
        wait_for(serving, 60, "the worker to serve")
        yield process
    finally:
        process.kill()
        process.wait(10)
