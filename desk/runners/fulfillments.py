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

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import tags

from opsflow.desk.runners.carrier import Carrier
from opsflow.desk.runners.lease_keeper import crash_runs
from opsflow.itsm.requests import CARRIED_STATES
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.requests import LEASE_PREFIX

logger = logging.getLogger("opsflow.desk.fulfillments")

ACTOR = "service-desk"
DEFAULT_MAX_RUNNING = 200
"""Requests one worker carries at once: most wait for an approver or on SSH."""


class RequestRunner(Carrier):
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
        super().__init__(store, LEASE_PREFIX, lease_s, max_running)
        self._requests = store.requests
        self._run = run or _run_fulfillment

    def waiting(self, changed_before: datetime | None) -> list[int]:
        """Requests not yet final that no lease covers, oldest first."""
        return self._requests.unclaimed(changed_before)

    def needs_carrying(self, item_id: int) -> bool:
        """Whether the request is still on its way to a final state."""
        return self._requests.get(item_id).state in CARRIED_STATES

    def carry(self, item_id: int) -> None:
        """Run the request's fulfillment flow here, to its end or its next take-over."""
        self._run(self._requests.get(item_id).number)

    def note_take_over(self, item_id: int, holder: str) -> None:
        """Crash the stopped holder's runs and audit who carries the request on, and why."""
        record = self._requests.get(item_id)
        now = datetime.now(UTC)
        if holder:
            crashed = crash_runs(
                record.flow_run_ids, f"{holder} stopped while carrying {record.number}"
            )
            detail = {"from": holder, "by": self.leases.holder, "state": record.state}
            self._requests.note(
                record.id, ACTOR, "taken_over", {**detail, "crashed_runs": crashed}, now
            )
            logger.warning("took over %s (%s) from %s", record.number, record.state, holder)
        else:
            why = "no worker took it up within a lease (its wake-up was lost)"
            detail = {"by": self.leases.holder, "state": record.state, "why": why}
            self._requests.note(record.id, ACTOR, "taken_up", detail, now)
            logger.warning("took up %s (%s): %s", record.number, record.state, why)
        if record.state == "fulfilling":
            # Fulfillment flows are idempotent: doing it again finishes what was interrupted.
            self._requests.move(record.id, "approved", ACTOR, now, decided_at=record.decided_at)


def _run_fulfillment(number: str) -> Any:
    from opsflow.flows.request_fulfillment import fulfill_request

    with tags("itil:request-fulfillment"):
        return fulfill_request(number)
