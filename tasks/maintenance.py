"""Declare a maintenance window around work that stops things, so triage expects its fallout.

Where the estate names an Alertmanager, the window is mirrored there as silences (one per
label the estate's label contract reads a host from), so the team's other receivers are quiet
too; closing the window ends them with it. Alertmanager being down never stops the work: the
window still holds in opsflow, and the run's log says the mirror failed. A run that takes
over the work of one that died closes the windows the dead run left open.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from opsflow.errors import OpsError
from opsflow.inventory.models import Estate
from opsflow.itsm.ci import silence_label_sets
from opsflow.itsm.store.maintenance import DeclaredWindow
from opsflow.itsm.store.records import open_records
from opsflow.tasks.change import Change
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.records import current_flow_run_id
from opsflow.tasks.run_logging import run_logger
from opsflow.tasks.silences import create_silence, end_silence

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


def silence_comment(window: DeclaredWindow) -> str:
    """The comment of the silences mirroring a window: its name and id, and why."""
    return f"opsflow maintenance window {window.label}: {window.reason}"[:1000]


def mirror_window(window_id: int, estate: Estate) -> DeclaredWindow:
    """Mirror a window as silences in the estate's Alertmanager, once: a window that already
    has its silences keeps them (and a silence made before a crash is found, not made again).

    Raises:
        OpsError: Alertmanager failed or refused; the window stays unmirrored.
    """
    windows = open_records().maintenance
    window = windows.get(window_id)
    link = estate.settings.alertmanager
    if link is None or window.silence_ids is not None:
        return window
    hosts = [h for h in estate.hosts if h.name in window.hosts]
    ids = [
        create_silence(link, matchers, window.start, window.end, silence_comment(window)).silence_id
        for matchers in silence_label_sets(hosts, estate.settings.labels)
    ]
    return windows.record_silences(window.id, ids)


def end_mirror(window_id: int, estate: Estate) -> DeclaredWindow:
    """End a window's silences with it: at its (new) end, expired at once if that is past.

    Raises:
        OpsError: Alertmanager failed or refused; the silences lapse at their own end.
    """
    windows = open_records().maintenance
    window = windows.get(window_id)
    if not window.silence_ids:
        return window
    link = estate.settings.alertmanager
    if link is None:
        run_logger(__name__).warning(
            "maintenance window %s has silences %s but the estate names no Alertmanager now",
            window.label,
            ", ".join(window.silence_ids),
        )
        return window
    ids = [end_silence(link, sid, window.end).silence_id for sid in window.silence_ids]
    return windows.record_silences(window.id, ids) if ids != window.silence_ids else window


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[1, 3], timeout_seconds=120)
def close_windows_left_open(
    flow_run_ids: list[str], estate: Estate, grace_s: float = DEFAULT_GRACE_S
) -> list[Change]:
    """Close, as their runs would have, the windows that runs which stopped inside their work
    left open, and end their silences: a window left open would keep suppressing real alerts
    on its hosts until it lapses. One change per window; idempotent, so retried.
    """
    now = datetime.now(UTC)
    windows = open_records().maintenance
    changes = []
    for window in windows.left_open(flow_run_ids, now):
        closed = windows.close(window.id, now + timedelta(seconds=grace_s), now)
        try:
            end_mirror(closed.id, estate)
        except OpsError as exc:
            run_logger(__name__).error(
                "the silences of window %s are not ended: %s", closed.label, exc
            )
        run_logger(__name__).warning(
            "maintenance window %s of stopped run %s over %s ends %s",
            closed.label,
            closed.flow_run_id,
            ", ".join(closed.hosts),
            f"{closed.end:%H:%M:%S}",
        )
        changes.append(
            Change.made(
                None,
                "close_windows_left_open",
                f"maintenance window {closed.label}",
                f"closed, left open by run {closed.flow_run_id}; ends {closed.end:%H:%M:%S}",
            )
        )
    return changes


@contextmanager
def maintenance_window(
    hosts: Iterable[str],
    reason: str,
    minutes: float,
    grace_s: float = DEFAULT_GRACE_S,
    name: str | None = None,
    estate: Estate | None = None,
) -> Iterator[DeclaredWindow | None]:
    """Hold a declared maintenance window over `hosts` for the block, closed when it exits.

    Args:
        hosts: Host names the work may disturb; none means no window (and None yielded).
        reason: Why, for the people reading triage's decisions.
        minutes: The longest the work may take: the window lapses then even if the flow
            dies without closing it.
        grace_s: How long after the block the window still covers late-stamped alerts.
        name: Who declares it; default the running flow's name.
        estate: The estate whose Alertmanager mirrors the window; default the configured one.
    """
    hosts = sorted(set(hosts))
    if not hosts:
        yield None
        return
    window = open_maintenance_window(
        name or flow_run.flow_name or "opsflow", hosts, reason, minutes
    )
    try:
        estate = estate or read_estate.fn()
        window = mirror_window(window.id, estate)
    except OpsError as exc:
        run_logger(__name__).error(
            "maintenance window %s is not mirrored as silences: %s", window.label, exc
        )
    try:
        yield window
    finally:
        close_maintenance_window(window.id, grace_s)
        try:
            if estate is not None:
                end_mirror(window.id, estate)
        except OpsError as exc:
            run_logger(__name__).error(
                "the silences of window %s are not ended: %s", window.label, exc
            )
