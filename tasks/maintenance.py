"""Declare a maintenance window around work that stops things, so triage expects its fallout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from opsflow.itsm.store.maintenance import DeclaredWindow
from opsflow.itsm.store.records import open_records
from opsflow.tasks.records import current_flow_run_id

DEFAULT_GRACE_S = 60.0
"""How long a window outlives the work: monitoring stamps an alert when it evaluates it,
which can be a scrape and an evaluation interval after the outage it saw."""


@task(cache_policy=NONE, timeout_seconds=60)
def open_maintenance_window(
    name: str, hosts: list[str], reason: str, minutes: float
) -> DeclaredWindow:
    """Declare a window over `hosts` from now for at most `minutes` (not retried: no duplicates)."""
    now = datetime.now(UTC)
    window = open_records().maintenance.declare(
        name=name,
        hosts=hosts,
        reason=reason,
        start=now,
        end=now + timedelta(minutes=minutes),
        flow_run_id=current_flow_run_id(),
    )
    get_run_logger().info(
        "maintenance window %s over %s until %s: %s",
        window.label,
        ", ".join(window.hosts),
        f"{window.end:%H:%M:%S}",
        reason,
    )
    return window


@task(
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[1, 3],
    timeout_seconds=60,
)
def close_maintenance_window(window_id: int, grace_s: float = DEFAULT_GRACE_S) -> DeclaredWindow:
    """End the window `grace_s` from now, never later than declared; idempotent, so retried."""
    now = datetime.now(UTC)
    window = open_records().maintenance.close(window_id, now + timedelta(seconds=grace_s), now)
    get_run_logger().info("maintenance window %s ends %s", window.label, f"{window.end:%H:%M:%S}")
    return window


@contextmanager
def maintenance_window(
    hosts: Iterable[str],
    reason: str,
    minutes: float,
    grace_s: float = DEFAULT_GRACE_S,
    name: str | None = None,
) -> Iterator[DeclaredWindow | None]:
    """Hold a declared maintenance window over `hosts` for the block, closed when it exits.

    Args:
        hosts: Host names the work may disturb; none means no window (and None yielded).
        reason: Why, for the people reading triage's decisions.
        minutes: The longest the work may take: the window lapses then even if the flow
            dies without closing it.
        grace_s: How long after the block the window still covers late-stamped alerts.
        name: Who declares it; default the running flow's name.
    """
    hosts = sorted(set(hosts))
    if not hosts:
        yield None
        return
    window = open_maintenance_window(
        name or flow_run.flow_name or "opsflow", hosts, reason, minutes
    )
    try:
        yield window
    finally:
        close_maintenance_window(window.id, grace_s)
