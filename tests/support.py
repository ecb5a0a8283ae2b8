"""Small helpers for tests: free ports and polling instead of sleeping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import requests
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from opsflow.itsm.records import Incident, IncidentCreate


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of the one sample called `name` with (at least) `labels` in a Prometheus
    text page, read by `prometheus_client`'s parser; fails when there is none or several."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{len(found)} samples {name}{labels}"
    return found[0]


def prefect_events(prefix: str) -> list[dict]:
    """Events in the Prefect server's feed whose name starts with `prefix`."""
    answer = requests.post(
        f"{PREFECT_API_URL.value()}/events/filter",
        json={"filter": {"event": {"prefix": [prefix]}}, "limit": 50},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["events"]


PROJECT = Path(__file__).resolve().parents[1]


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


def run_state(flow_run_id: str) -> str:
    """The Prefect state type of a flow run (PAUSED, RUNNING, CRASHED…)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run.state.type.value if run.state else "NONE"


class NoWorkers:
    """A desk's wake-ups (`app.state.wake_ups`) that reach no worker: the requests and grants
    it records stay as it recorded them."""

    def request_submitted(self) -> None:
        """A request was recorded; nobody is told."""

    def access_changed(self) -> None:
        """An access change was recorded; nobody is told."""


def open_service_down(host: str, summary: str) -> Incident:
    """A New service-down incident for app on `host`, with the restart-service runbook."""
    from opsflow.itsm.store.records import open_records

    incident, _ = open_records().correlation.open_or_correlate(
        IncidentCreate(
            host=host,
            service="app",
            symptom="service-down",
            summary=summary,
            impact=2,
            urgency=1,
            runbook="restart-service",
            assignment_group="ops",
            correlation_key=f"{host}/app/{uuid4().hex}",
        ),
        datetime.now(UTC),
        actor="test",
    )
    return incident
