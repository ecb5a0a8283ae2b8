"""Turn bursts of "events stored" into a few triage passes, with back-off when they fail.

One background thread runs a triage pass whenever it is told events arrived, again and again
while a pass finds work, so a storm becomes a few passes. In the desk a pass hands triage to
Prefect's task workers; in a worker it triages (`opsflow.runtime.worker`). A pass that fails
(the database or the Prefect API is down, say: single events that fail are isolated by triage
itself) is retried after a delay that doubles up to a minute, not every second, and the
failure is kept for the health endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opsflow.itsm.store.records import Records

logger = logging.getLogger("opsflow.desk.dispatch")


@dataclass(frozen=True)
class TriageStatus:
    """How the dispatcher's triage passes are going, for the health endpoint."""

    failing: bool
    consecutive_failures: int
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    retry_in_s: float


MIN_PASS_INTERVAL_S = 0.25
"""Passes start at most this often, so a storm costs a few triage runs a second, not one
per commit: with PostgreSQL notifying every commit, back-to-back passes of single alerts
took 2.4 ms of CPU per alert on a 2-core machine and cut the desk's intake to a quarter
(bench.intake). A pass after a quiet spell starts at once: the closed loop waits only in
a storm."""

MAX_DUTY = 0.5
"""In a storm, triage passes take at most this share of the time: after a pass that took
T seconds and found work, the next waits T x (1 - MAX_DUTY) / MAX_DUTY. Triage catches up
after the storm; meanwhile intake, on the same cores and database, keeps acknowledging
senders at its own speed (a worker triaging back to back halved the desk's intake in
bench.intake). A short pass (one alert) waits no longer than `min_interval_s`."""


class Dispatcher:
    """Coalesces "events stored" signals into triage passes.

    Args:
        triage: runs one pass; True when it found work (another pass follows).
        backoff_s: (first, longest) delay before retrying a pass that failed.
        min_interval_s: least time from one pass's start to the next's.
        max_duty: most of the time passes that found work may take, in (0, 1].
    """

    def __init__(
        self,
        triage: Callable[[], bool],
        backoff_s: tuple[float, float] = (1.0, 60.0),
        min_interval_s: float = MIN_PASS_INTERVAL_S,
        max_duty: float = MAX_DUTY,
    ) -> None:
        if not 0 < max_duty <= 1:
            raise ValueError(f"max_duty must be in (0, 1], got {max_duty}")
        self._triage = triage
        self._backoff_s = backoff_s
        self._min_interval_s = min_interval_s
        self._rest_per_busy_s = (1 - max_duty) / max_duty
        self._next_start = 0.0
        self._failures = 0
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._last_success_at: datetime | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="triage", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the triage thread; a first pass picks up events stored while it was down."""
        self._thread.start()
        self._wake.set()

    def notify(self) -> None:
        """Events were stored: make sure a triage pass follows."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the current pass, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def status(self) -> TriageStatus:
        """Whether triage is failing now, since when and why, and when it last succeeded."""
        with self._lock:
            return TriageStatus(
                failing=self._failures > 0,
                consecutive_failures=self._failures,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                last_success_at=self._last_success_at,
                retry_in_s=self._delay() if self._failures else 0.0,
            )

    def _delay(self) -> float:
        first, longest = self._backoff_s
        return min(longest, first * 2 ** max(0, self._failures - 1))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            self._stop.wait(self._next_start - time.monotonic())
            if self._stop.is_set():
                return
            started = time.monotonic()
            self._next_start = started + self._min_interval_s
            try:
                found_work = self._triage()
            except Exception as exc:
                with self._lock:
                    self._failures += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"[:500]
                    self._last_error_at = datetime.now(UTC)
                    delay = self._delay()
                logger.exception(
                    "event triage failed (%d in a row); the events stay pending, retry in %.0f s",
                    self._failures,
                    delay,
                )
                self._stop.wait(delay)
                self._wake.set()
                continue
            with self._lock:
                self._failures = 0
                self._last_success_at = datetime.now(UTC)
            if found_work:
                ended = time.monotonic()
                rest = (ended - started) * self._rest_per_busy_s
                self._next_start = max(self._next_start, ended + rest)
                self._wake.set()


TRIAGE_LAG_LIMIT_S = 60.0
"""An event waiting longer than this for triage makes the desk's health "degraded"."""


def triage_health(
    store: Records, status: TriageStatus | None, now: datetime, detailed: bool = False
) -> dict[str, Any]:
    """What the health endpoint says about triage: backlog, failed events, the last error.

    `degraded` is true when triage runs are failing or the oldest pending event has waited
    longer than TRIAGE_LAG_LIMIT_S (triage is behind, or not running at all). The last
    error's text (`last_error`) is given only when `detailed` (to operators): it can name
    the database's host, user and name.
    """
    backlog = store.events.backlog()
    oldest = backlog.oldest_received_at
    age = (now - oldest).total_seconds() if oldest is not None else None
    failing = status is not None and status.failing
    health: dict[str, Any] = {
        "degraded": failing or (age is not None and age > TRIAGE_LAG_LIMIT_S),
        "pending_events": backlog.pending,
        "oldest_pending_age_s": None if age is None else round(age, 1),
        "failed_events": backlog.failed,
        "failing": failing,
        "last_error_at": status.last_error_at if status else None,
        "last_success_at": status.last_success_at if status else None,
    }
    if detailed:
        health["last_error"] = status.last_error if status else None
    return health
