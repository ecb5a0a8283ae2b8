"""Service requests carried to a final state in a worker's threads, and taken over when it dies.

The desk records a submitted request with no lease and wakes a worker (`fulfill-request`);
the worker leases the oldest request nobody carries and runs its `request-fulfillment` flow
in a thread of its own (`Carrier`). One thread per request, not a small pool: a request
waiting for approval holds its thread while paused, and a small pool would let a few pending
approvals block every standard request behind them. `max_running` bounds the threads, apart
from the task worker's own limit, so paused requests never keep restorations waiting.

A request whose worker died (its lease lapsed) is taken over: its dead runs are marked
Crashed, the take-over is audited and a new run carries it on, approval window and all. A
request that no worker took up within a lease (its wake-up was lost) is taken up the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import tags

from opsflow.desk.runners.carrier import ACTOR, RecordCarrier
from opsflow.itsm.requests import CARRIED_STATES, ServiceRequest
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.requests import LEASE_PREFIX

DEFAULT_MAX_RUNNING = 200
"""Requests one worker carries at once: most wait for an approver or on SSH."""


class RequestRunner(RecordCarrier):
    """Runs each request's fulfillment flow in its own daemon thread of a worker process.

    Args:
        store: the records holding the service requests and their leases.
        run: runs the fulfillment of one request (by number) in the calling thread.
        max_running: most requests carried here at once.
        lease_s: how long this process's leases last without renewal.
    """

    def __init__(
        self,
        store: Records,
        run: Callable[[str], Any] | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
        lease_s: float | None = None,
    ) -> None:
        super().__init__(
            store, store.requests, LEASE_PREFIX, CARRIED_STATES, "carrying", lease_s, max_running
        )
        self._requests = store.requests
        self._run = run or _run_fulfillment

    def carry(self, item_id: int) -> None:
        """Run the request's fulfillment flow here, to its end or its next take-over."""
        self._run(self._requests.get(item_id).number)

    def resume(self, record: ServiceRequest, now: datetime) -> None:
        """A request taken over while fulfilling is approved again: fulfillment flows are
        idempotent, so doing it again finishes what was interrupted."""
        if record.state == "fulfilling":
            self._requests.move(record.id, "approved", ACTOR, now, decided_at=record.decided_at)


def _run_fulfillment(number: str) -> Any:
    from opsflow.flows.request_fulfillment import fulfill_request

    with tags("itil:request-fulfillment"):
        return fulfill_request(number)
