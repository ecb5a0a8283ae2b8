"""The desk's `/metrics` (Prometheus format, through `prometheus_client`).

Two kinds of figures:
- what the records say (backlog, failed events, open incidents, SLA breaches, restorations
  running, approvals waiting, time to restore): read at scrape time by the bounded queries of
  `itsm.store.metrics`, the same whichever desk answers;
- what a desk process counted itself (intake latency, group commit sizes, events stored,
  refused, waiting for their commit) and the process's own CPU, memory and file descriptors.

The desk serves one port from several processes (`desk.server`), and a scrape reaches one
of them. So that a scrape sees them all, `desk.server` gives its processes a directory of
`prometheus_client`'s multiprocess mode (PROMETHEUS_MULTIPROC_DIR): each process writes its
counters to a file there, and the process that answers sums the files; process figures carry
the `pid` of each live desk process. Measured: ~5 us per intake request for the counters
(~2.7 us without the files), under 1% of a single-alert request's CPU. A desk in one process
(tests, `--processes 1`) answers from its own registry.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from opsflow.desk.estate import EstateCache
from opsflow.itsm.store.metrics import WAITING_FOR_APPROVAL, records_health
from opsflow.itsm.store.records import Records

logger = logging.getLogger("opsflow.desk.metrics")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
INTAKE_PATHS = {"/api/v1/events/alertmanager": "alertmanager", "/api/v1/events": "generic"}
"""The intake's routes, by the source label their latency is counted under."""

if _shared := os.environ.get(MULTIPROCESS_ENV):
    # Should it have been removed under a running desk, a process replacing one that died
    # must still start (counting afresh), not fail at every attempt.
    Path(_shared).mkdir(mode=0o700, parents=True, exist_ok=True)

INTAKE_SECONDS = Histogram(
    "opsflow_intake_seconds",
    "Time to answer an intake request (202 once its events are committed), by source.",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMIT_SECONDS = Histogram(
    "opsflow_intake_commit_seconds",
    "Time to store one group commit of events (one transaction).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GROUP_REQUESTS = Histogram(
    "opsflow_intake_group_requests",
    "Intake requests whose events shared one commit.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
GROUP_EVENTS = Histogram(
    "opsflow_intake_group_events",
    "Events stored (or found repeated) in one commit.",
    buckets=(1, 10, 100, 500, 1000, 5000, 10000),
)
EVENTS_STORED = Counter("opsflow_events_stored", "New events stored by the intake.")
EVENTS_REPEATED = Counter(
    "opsflow_events_repeated", "Events the intake received again and stored nothing for."
)
EVENTS_REJECTED = Counter(
    "opsflow_events_rejected", "Alerts and events refused at intake, by source.", ["source"]
)
INTAKE_WAITING = Gauge(
    "opsflow_intake_waiting_events",
    "Events accepted and waiting for their commit.",
    multiprocess_mode="livesum",
)
for _source in INTAKE_PATHS.values():
    INTAKE_SECONDS.labels(source=_source)
    EVENTS_REJECTED.labels(source=_source)


def observe_request(method: str, path: str, status: int, seconds: float) -> None:
    """Count an answered request's time when it was an intake delivery."""
    source = INTAKE_PATHS.get(path)
    if source is not None and method == "POST":
        INTAKE_SECONDS.labels(source=source).observe(seconds)


def observe_commit(requests: int, events: int, seconds: float) -> None:
    """Count one group commit: its requests, its events and how long it took."""
    GROUP_REQUESTS.observe(requests)
    GROUP_EVENTS.observe(events)
    COMMIT_SECONDS.observe(seconds)


class RecordsCollector(Collector):
    """The records' figures (`itsm.store.metrics`), read afresh at each scrape.

    When the records cannot be read, the scrape still answers: `opsflow_records_readable`
    is 0 and the figures are missing, rather than the whole page failing.
    """

    def __init__(self, store: Records) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        """The figures as Prometheus metric families."""
        now = datetime.now(UTC)
        readable = GaugeMetricFamily(
            "opsflow_records_readable", "1 when the desk could read its records at this scrape."
        )
        try:
            health = records_health(self._store.db, now)
        except Exception as exc:  # whatever the database says, the page answers
            logger.warning("metrics: cannot read the records: %s", exc)
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        yield _gauge(
            "opsflow_triage_pending_events",
            "Events stored and not triaged yet.",
            health.pending.count,
        )
        yield _gauge(
            "opsflow_triage_oldest_pending_seconds",
            "Age of the oldest event not triaged yet (0 when none waits).",
            _age(now, health.pending.oldest),
        )
        yield _gauge(
            "opsflow_events_failed",
            "Events triage marked failed, each with its reason, waiting for an operator.",
            health.failed_events,
        )
        open_incidents = GaugeMetricFamily(
            "opsflow_incidents_open",
            "Incidents not yet resolved, by priority.",
            labels=["priority"],
        )
        breached = GaugeMetricFamily(
            "opsflow_incidents_sla_breached",
            "Open incidents past their response or resolution target, by priority.",
            labels=["priority", "target"],
        )
        for level in range(1, 6):
            open_incidents.add_metric([f"P{level}"], health.open_incidents.get(level, 0))
            for target in ("response", "resolution"):
                breached.add_metric(
                    [f"P{level}", target], health.sla_breached.get((level, target), 0)
                )
        yield open_incidents
        yield breached
        yield _gauge(
            "opsflow_restorations_running",
            "Restorations a worker holds the lease of now.",
            health.restorations_running,
        )
        waiting = GaugeMetricFamily(
            "opsflow_approvals_waiting",
            "Service requests (kind request) and access grants (kind access) waiting for an "
            "approver.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "opsflow_approvals_oldest_waiting_seconds",
            "How long the oldest of them has waited since it was submitted (0 when none).",
            labels=["kind"],
        )
        for kind in WAITING_FOR_APPROVAL:
            waiting.add_metric([kind], health.approvals[kind].count)
            oldest.add_metric([kind], _age(now, health.approvals[kind].oldest))
        yield waiting
        yield oldest
        times = health.restore_times
        yield HistogramMetricFamily(
            "opsflow_time_to_restore_seconds",
            "Time from incident opened to service restored, of every restored incident.",
            buckets=[*((f"{b:g}", n) for b, n in times.buckets), ("+Inf", times.count)],
            sum_value=times.sum_s,
        )


class EstateCollector(Collector):
    """Whether the desk's estate files load, and when the estate in use was loaded."""

    def __init__(self, estate: EstateCache) -> None:
        self._estate = estate

    def collect(self) -> Iterator[Metric]:
        """The estate's status as two gauges."""
        status = self._estate.status()
        yield _gauge(
            "opsflow_estate_load_failing",
            "1 while the estate files on disk do not load.",
            int(status.failing),
        )
        yield _gauge(
            "opsflow_estate_loaded_timestamp_seconds",
            "When the estate in use was loaded (0: none loaded yet).",
            status.loaded_at.timestamp() if status.loaded_at else 0,
        )


class DeskProcesses(Collector):
    """What every live desk process counted (their multiprocess files summed), and each
    one's process figures labelled with its pid. Files of processes that died are kept for
    their counters; their gauges are dropped."""

    _PID = re.compile(r"_(\d+)\.db$")

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        """The summed counters, then the process figures of each live desk process."""
        pids = {int(m.group(1)) for f in os.listdir(self._directory) if (m := self._PID.search(f))}
        live = {pid for pid in pids if _alive(pid)}
        for pid in pids - live:
            multiprocess.mark_process_dead(pid, str(self._directory))
        yield from multiprocess.MultiProcessCollector(None, str(self._directory)).collect()
        families: dict[str, Metric] = {}
        for pid in sorted(live):
            for family in ProcessCollector(pid=partial(int, pid), registry=None).collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "pid": str(pid)}
                    merged.add_sample(sample.name, labels, sample.value)
        yield from families.values()


class _ThisProcess(Collector):
    """Everything this process registered by default: its counters and process figures."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def metrics_registry(store: Records, estate: EstateCache) -> CollectorRegistry:
    """What the desk's `/metrics` shows: the records, the estate, and the desk's processes
    (all of them in multiprocess mode, else this one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecordsCollector(store))
    registry.register(EstateCollector(estate))
    directory = os.environ.get(MULTIPROCESS_ENV)
    registry.register(DeskProcesses(Path(directory)) if directory else _ThisProcess())
    return registry


def prepare_multiprocess_dir(directory: Path) -> None:
    """Make `directory` the desk processes' shared metrics directory, empty, and export it
    to the processes started from here on (before they import `prometheus_client`)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(directory)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _age(now: datetime, since: datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
