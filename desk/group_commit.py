"""Group commit for the intake: events of requests that arrive together share one commit."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from opsflow.desk.metrics import (
    EVENTS_REPEATED,
    EVENTS_STORED,
    INTAKE_WAITING,
    observe_commit,
)
from opsflow.errors import TransientError
from opsflow.itsm.records import EventIn
from opsflow.itsm.store.records import Records

logger = logging.getLogger("opsflow.desk.intake")


RETRY_AFTER_S = 1
"""What a refused sender is told to wait before it tries again (Alertmanager retries 5xx)."""


class IntakeBusyError(TransientError):
    """Too many events are waiting to be committed: the sender should retry shortly."""


class IntakeStoreError(TransientError):
    """The store could not commit a group of events; none of them is stored."""


@dataclass(frozen=True)
class _Waiting:
    events: list[EventIn]
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[tuple[int, int]]


class GroupCommit:
    """One writer thread storing, in one transaction, the events of every request that came
    in while it was busy with the last: a commit (and SQLite's writer lock) is paid per group
    of requests, not per request, and each request is answered only once its events are
    committed; if the transaction fails, every request of the group gets the error.

    The events accepted but not yet committed are bounded: past `max_waiting` a request is
    refused at once with `IntakeBusyError` (nothing of it stored), rather than memory and
    answer times growing without limit while the store is slow or stuck.

    Args:
        store: the records store the events go to.
        max_events: how many events one transaction takes at most (bounds the wait).
        max_waiting: how many events may wait for their commit; a request alone in the
            queue is taken whatever its size.
    """

    def __init__(self, store: Records, max_events: int = 10_000, max_waiting: int = 50_000) -> None:
        self._store = store
        self._max_events = max_events
        self._max_waiting = max_waiting
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    async def store(self, events: list[EventIn]) -> tuple[int, int]:
        """Store one request's events; (stored, duplicates) once they are committed.

        Raises:
            IntakeBusyError: too many events wait already; nothing of this request is queued.
            IntakeStoreError: the transaction failed; nothing of this request is stored.
        """
        with self._waiting_lock:
            if self._waiting and self._waiting + len(events) > self._max_waiting:
                raise IntakeBusyError(
                    f"{self._waiting} events are waiting to be stored; retry in {RETRY_AFTER_S} s"
                )
            self._waiting += len(events)
        INTAKE_WAITING.inc(len(events))
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._ensure_writer()
        self._queue.put(_Waiting(events, loop, answer))
        return await answer

    def _ensure_writer(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_forever, name="intake-group-commit", daemon=True
                )
                self._thread.start()

    def _write_forever(self) -> None:
        while True:
            group = [self._queue.get()]
            size = len(group[0].events)
            while size < self._max_events:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(waiting)
                size += len(waiting.events)
            self._write(group)
            with self._waiting_lock:
                self._waiting -= size
            INTAKE_WAITING.dec(size)

    def _write(self, group: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            counts = self._store.events.store_groups([w.events for w in group], datetime.now(UTC))
        except Exception as exc:  # every request of the group is told: nothing of it is stored
            logger.warning("storing the events of %d request(s) failed: %s", len(group), exc)
            error = IntakeStoreError(f"storing the events failed: {exc}")
            for waiting in group:
                _answer(waiting, None, error)
            return
        observe_commit(len(group), sum(map(sum, counts)), time.perf_counter() - started)
        EVENTS_STORED.inc(sum(stored for stored, _ in counts))
        EVENTS_REPEATED.inc(sum(repeated for _, repeated in counts))
        for waiting, count in zip(group, counts, strict=True):
            _answer(waiting, count, None)


def _answer(waiting: _Waiting, counts: tuple[int, int] | None, error: BaseException | None) -> None:
    def settle() -> None:
        if waiting.answer.done():
            return  # the client went away
        if error is not None:
            waiting.answer.set_exception(error)
        else:
            assert counts is not None, "an answer is counts or an error"
            waiting.answer.set_result(counts)

    with suppress(RuntimeError):  # the event loop has closed: nobody is waiting any more
        waiting.loop.call_soon_threadsafe(settle)
