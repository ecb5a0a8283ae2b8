"""The desk's word to the workers that work was recorded: one wake-up per item, sent after
the commit from a thread of its own.

The record is the work; the wake-up (`flows.work`) only makes a worker look at once. So the
desk answers as soon as the record is committed, whether or not the Prefect API answers, and
a wake-up that cannot be sent is logged and dropped: the workers' sweeps take up what waited
longer than a lease.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from opsflow.flows.work import fulfill_request, provision_access, roll_out_release

logger = logging.getLogger("opsflow.desk.wake_ups")

MAX_QUEUED = 10_000
"""Wake-ups waiting to be sent; beyond, they are dropped and the sweeps find the work."""


class WakeUps:
    """Sends the `fulfill-request`, `provision-access` and `roll-out-release` wake-ups in the
    background."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def request_submitted(self) -> None:
        """A service request was recorded: a worker should start carrying it."""
        self._send(fulfill_request)

    def release_recorded(self) -> None:
        """A release was recorded: a worker should start rolling it out."""
        self._send(roll_out_release)

    def access_changed(self) -> None:
        """A grant was approved or its revocation asked for: a worker should carry it out."""
        self._send(provision_access)

    def _send(self, wake_up: Any) -> None:
        try:
            self._queue.put_nowait(wake_up)
        except queue.Full:
            logger.warning("%d wake-ups waiting: %s dropped", MAX_QUEUED, wake_up.name)
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wake-ups", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            wake_up = self._queue.get()
            try:
                wake_up.delay()
            except Exception as exc:
                logger.warning(
                    "could not send %s (%s): a worker's sweep takes the work up", wake_up.name, exc
                )
