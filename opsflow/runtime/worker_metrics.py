"""A worker's `/metrics`: its triage passes, its restorations, its SSH connections, itself.

A worker is a process of its own, often on another machine than the desk, so it serves its
own small HTTP port (`opsflow worker --metrics-port`; `opsflow up` gives worker N the desk's
port + N) from `prometheus_client`'s default registry: what this worker counted, what the
flows it ran counted (`flows.incident_restoration`'s outcomes), and Python's process and
garbage-collector figures. The records' figures (backlog, approvals, SLA) are the desk's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from opsflow.errors import OpsError
from opsflow.flows.incident_restoration import RESTORATIONS
from opsflow.tasks.ssh_connections import open_connections

if TYPE_CHECKING:
    from opsflow.runtime.worker import Worker

TRIAGE_RUNS = Counter(
    "opsflow_triage_runs",
    "Triage passes (event-triage flow runs) this worker ran, by outcome: triaged, failed.",
    ["outcome"],
)
TRIAGE_SECONDS = Histogram(
    "opsflow_triage_run_seconds",
    "Time one triage pass took, its flow run included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TRIAGE_LAG = Histogram(
    "opsflow_triage_lag_seconds",
    "How long the oldest event of a triage pass had waited when the pass took it up.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
TRIAGE_EVENTS = Counter(
    "opsflow_triage_events",
    "Events this worker's triage decided on, by class and action (opened, correlated, ...).",
    ["class", "action"],
)
RESTORATIONS_RUNNING = Gauge(
    "opsflow_worker_restorations_running", "Restorations running in this worker now."
)
SSH_CONNECTIONS = Gauge(
    "opsflow_ssh_connections_open", "SSH connections this process keeps open in its pool."
)
SSH_CONNECTIONS.set_function(open_connections)
for _outcome in ("triaged", "failed"):
    TRIAGE_RUNS.labels(_outcome)


FLOW_METRICS = (RESTORATIONS,)
"""Counted by the flows a worker runs, registered when their module is imported: imported
here, so that a worker's page has them before its first restoration."""


def watch(worker: Worker) -> None:
    """Report `worker`'s running restorations (the last worker watched, in this process)."""
    RESTORATIONS_RUNNING.set_function(lambda: worker.restorations.running)


def observe_triage(run: Callable[[], list[dict[str, Any]]], oldest: datetime) -> bool:
    """Run one triage pass whose oldest event arrived at `oldest`, counting it and the events
    it decided (the flow's counts by class and action); whether it decided on any. The
    pass's error, if any, is counted and raised again."""
    TRIAGE_LAG.observe(max(0.0, (datetime.now(UTC) - oldest).total_seconds()))
    with TRIAGE_SECONDS.time():
        try:
            ways = run()
        except BaseException:
            TRIAGE_RUNS.labels("failed").inc()
            raise
    TRIAGE_RUNS.labels("triaged").inc()
    for way in ways:
        TRIAGE_EVENTS.labels(way["event_class"], way["action"]).inc(way["events"])
    return bool(ways)


def serve_metrics(host: str, port: int) -> int:
    """Serve this process's `/metrics` on `host`:`port` (0: any free port) in a thread; the
    port it listens on.

    Raises:
        OpsError: the address cannot be listened on (in use, or not this machine's).
    """
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        raise OpsError(f"cannot serve the worker's metrics on {host}:{port}: {exc}") from exc
    return int(server.server_port)
