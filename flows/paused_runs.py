"""The paused runs of this process, each woken as soon as it is resumed, for a cost that does
not grow with their number.

A run that pauses for an approval registers here first. Whoever resumes it in this process
wakes it at once (`ResumeWaiters.wake`); one thread per process, alive only while some run
waits, reads every waiting run in one API call each RESUME_CHECK_S to find those resumed
elsewhere (a desk in another process, the Prefect UI). Prefect's own `pause_flow_run` polls
the API once a second per paused run instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

RESUME_CHECK_S = 2.0
"""How often one check per process looks for paused runs resumed by someone else."""

logger = logging.getLogger(__name__)


class ResumeWaiters:
    """The paused runs of this process, each woken when it is resumed.

    `decision_sent` wakes a run at once; a thread of its own, alive only while some run
    waits, reads every waiting run in one API call each RESUME_CHECK_S to find those
    resumed elsewhere. `checks` counts those calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[UUID, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self.checks = 0

    @contextlib.contextmanager
    def waiting(self, run_id: UUID) -> Iterator[threading.Event]:
        """Register `run_id` (before pausing, so no wake is missed) while the block runs."""
        event = threading.Event()
        with self._lock:
            self._events[run_id] = event
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._check, name="request-resumes", daemon=True
                )
                self._thread.start()
        try:
            yield event
        finally:
            with self._lock:
                self._events.pop(run_id, None)

    def wake(self, run_id: UUID) -> None:
        """The run was resumed: let it go on now."""
        with self._lock:
            event = self._events.get(run_id)
        if event is not None:
            event.set()

    def _check(self) -> None:
        while True:
            time.sleep(RESUME_CHECK_S)
            with self._lock:
                ids = [run_id for run_id, event in self._events.items() if not event.is_set()]
                if not self._events:
                    self._thread = None
                    return
            if not ids:
                continue
            try:
                self.checks += 1
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
                    )
            except Exception:
                logger.exception("checking %d paused runs failed; trying again", len(ids))
                continue
            for run in runs:
                if run.state is not None and not run.state.is_paused():
                    self.wake(run.id)
