"""Leased work carried in a worker's threads: claimed when woken, taken over when its holder dies.

The records are the queue: an item (a service request, an access change) waits in them with
no lease until some worker claims it. A wake-up makes a worker claim the oldest waiting item,
leasing it before anything runs, and carry it in a thread of the carrier's own; the wake-up
itself returns at once, so work that waits (a request paused for an approver) never holds a
slot of Prefect's task worker. `max_running` bounds those threads; a thread whose item is
done goes on to the next waiting item, so one turned away for want of a slot is not left to
the sweep. The `LeaseKeeper` renews the leases, takes over items whose holder stopped
renewing (its process died) and items that waited longer than a lease with no lease at all
(their wake-up reached nobody). An item whose run failed (the database or the Prefect API
was down, say) keeps its lease one lease longer and is then carried again.

`LeasedThreads` is what every runner of leased work shares (restorations too, which are
carried differently): the slots and the keeper. `RecordCarrier` carries numbered records
(service requests, releases) to a final state.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from opsflow.desk.runners.lease_keeper import LeaseKeeper, TakeOver, crash_runs
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.releases import Releases
from opsflow.itsm.store.requests import Requests
from opsflow.settings import get_settings

logger = logging.getLogger("opsflow.desk.carrier")

ACTOR = "service-desk"


class LeasedThreads(ABC):
    """Leased work of one prefix run in this process's threads, at most `max_running` at once,
    its leases renewed and taken over by a `LeaseKeeper`.

    Args:
        store: the records holding the work and its leases.
        prefix: the work's lease prefix, e.g. "request:".
        lease_s: how long this process's leases last without renewal (default: the settings').
        max_running: most items run here at once.
    """

    def __init__(
        self, store: Records, prefix: str, lease_s: float | None, max_running: int
    ) -> None:
        self.max_running = max_running
        self.running = 0
        self._changed = threading.Condition()
        self.leases = LeaseKeeper(
            store.leases,
            prefix,
            lease_s or get_settings().lease_seconds,
            self._take_over,
            self._unleased,
        )

    @abstractmethod
    def _take_over(self, name: str, holder: str) -> TakeOver:
        """Carry on the work `name`, whose lease this process now holds (`LeaseKeeper`)."""

    @abstractmethod
    def _unleased(self, now: datetime) -> list[str]:
        """Lease names of work that should run but that no lease covers (`LeaseKeeper`)."""

    def keep(self) -> None:
        """Start renewing this process's leases and taking over work whose holder stopped."""
        self.leases.start()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing runs here (e.g. before shutting down); False at the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.running == 0, timeout_s)

    def _reserve(self) -> bool:
        with self._changed:
            if self.running >= self.max_running:
                return False
            self.running += 1
            return True

    def _done(self) -> None:
        with self._changed:
            self.running -= 1
            self._changed.notify_all()


class Carrier(LeasedThreads):
    """Claims, carries and takes over one kind of leased work, in threads of its own.

    Args:
        store: the records holding the items and their leases.
        prefix: the items' lease prefix, e.g. "request:".
        lease_s: how long this process's leases last without renewal (default: the settings').
        max_running: most items carried here at once.
    """

    def __init__(
        self, store: Records, prefix: str, lease_s: float | None, max_running: int
    ) -> None:
        super().__init__(store, prefix, lease_s, max_running)
        self._prefix = prefix
        self._stopped = threading.Event()

    # -- what a kind of work says -----------------------------------------------------------

    @abstractmethod
    def waiting(self, changed_before: datetime | None) -> list[int]:
        """Ids of the items waiting for a carrier with no lease, oldest first; with
        `changed_before`, only those unchanged since then."""

    @abstractmethod
    def needs_carrying(self, item_id: int) -> bool:
        """Whether the item, read now, still needs carrying."""

    @abstractmethod
    def carry(self, item_id: int) -> None:
        """Carry the item in this thread, under this process's lease on it."""

    @abstractmethod
    def note_take_over(self, item_id: int, holder: str) -> None:
        """Before carrying an item whose holder stopped (`holder`) or that nobody carried
        (""): mark dead runs Crashed and say so in its audit."""

    # -- carrying ---------------------------------------------------------------------------

    def run_next(self) -> int | None:
        """Claim the oldest waiting item and start carrying it in a thread of its own; its id,
        or None when nothing waits or `max_running` items run here already.

        The lease is taken before anything runs, so two workers woken for the same item never
        both carry it: the loser moves on to the next item or returns.
        """
        if not self._reserve():
            return None
        try:
            item_id = self._claim()
        except BaseException:
            self._done()
            raise
        if item_id is None:
            self._done()
            return None
        self._launch(item_id)
        return item_id

    def stop(self) -> None:
        """Stop claiming and renewing: the items still carried here are for the next worker
        to take over."""
        self._stopped.set()
        self.leases.stop()

    def _lease_name(self, item_id: int) -> str:
        return f"{self._prefix}{item_id}"

    def _claim(self) -> int | None:
        if self._stopped.is_set():
            return None  # its leases would not be renewed: the work is another worker's
        for item_id in self.waiting(None):
            name = self._lease_name(item_id)
            if not self.leases.hold(name):
                continue
            # Re-read under the lease: another worker may have carried it since the listing.
            try:
                needed = self.needs_carrying(item_id)
            except BaseException:
                self.leases.let_lapse(name)
                raise
            if needed:
                return item_id
            self.leases.release(name)
        return None

    def _unleased(self, now: datetime) -> list[str]:
        """Items that waited longer than a lease with no lease: no wake-up reached a worker."""
        cutoff = now - timedelta(seconds=self.leases.lease_s)
        return [self._lease_name(item_id) for item_id in self.waiting(cutoff)]

    def _take_over(self, name: str, holder: str) -> TakeOver:
        item_id = int(name.removeprefix(self._prefix))
        if not self.needs_carrying(item_id):
            return "finished"  # finished before its holder could give the lease back
        if not self._reserve():
            return "later"
        try:
            self.note_take_over(item_id, holder)
            self._launch(item_id)
        except BaseException:
            self._done()
            raise
        return "carried"

    def _launch(self, item_id: int) -> None:
        thread = threading.Thread(
            target=self._carry_on,
            args=(item_id,),
            name=f"{self._prefix.rstrip(':')}-{item_id}",
            daemon=True,
        )
        thread.start()

    def _carry_on(self, item_id: int | None) -> None:
        """Carry the item, then the next waiting ones while there are any, in this slot."""
        try:
            while item_id is not None:
                name = self._lease_name(item_id)
                try:
                    self.carry(item_id)
                    unfinished = self.needs_carrying(item_id)
                except Exception:
                    logger.exception("carrying %s failed; trying again in a lease", name)
                    self._retry_later(name)
                else:
                    if unfinished:  # its run ended early (it lost its lease, say): not in a loop
                        logger.warning("%s still needs carrying; trying again in a lease", name)
                        self._retry_later(name)
                    else:
                        self.leases.release(name)
                item_id = self._claim()
        except Exception:
            logger.exception("claiming the next %s item failed; the sweep will", self._prefix)
        finally:
            self._done()

    def _retry_later(self, name: str) -> None:
        """Keep the lease of an item whose run failed for one more lease, then let it lapse:
        the next keeper to look carries it again, but not at once and not in a loop."""

        def lapse() -> None:
            try:
                self.leases.let_lapse(name)
            except Exception:  # no longer renewed, it lapses at its end anyway
                logger.warning("letting %s lapse failed", name, exc_info=True)

        timer = threading.Timer(self.leases.lease_s, lapse)
        timer.daemon = True
        timer.start()


class RecordCarrier(Carrier):
    """Carries numbered records each to a final state, and audits every take-over.

    Args:
        store: the records holding them and their leases.
        records: their kind's table in `store`.
        prefix: their lease prefix.
        carried_states: the states in which a record still needs carrying.
        doing: what carrying one is called, for the message of a stopped holder's runs.
        lease_s: how long this process's leases last without renewal.
        max_running: most records carried here at once.
    """

    def __init__(
        self,
        store: Records,
        records: Requests | Releases,
        prefix: str,
        carried_states: Collection[str],
        doing: str,
        lease_s: float | None,
        max_running: int,
    ) -> None:
        super().__init__(store, prefix, lease_s, max_running)
        self._records = records
        self._carried_states = carried_states
        self._doing = doing

    def waiting(self, changed_before: datetime | None) -> list[int]:
        """Records not yet final that no lease covers, oldest first."""
        return self._records.unclaimed(changed_before)

    def needs_carrying(self, item_id: int) -> bool:
        """Whether the record is still on its way to a final state."""
        return self._records.get(item_id).state in self._carried_states

    def note_take_over(self, item_id: int, holder: str) -> None:
        """Crash the stopped holder's runs and audit who carries the record on, and why."""
        record = self._records.get(item_id)
        now = datetime.now(UTC)
        if holder:
            crashed = crash_runs(
                record.flow_run_ids, f"{holder} stopped while {self._doing} {record.number}"
            )
            detail = {"from": holder, "by": self.leases.holder, "state": record.state}
            self._records.note(
                record.id, ACTOR, "taken_over", {**detail, "crashed_runs": crashed}, now
            )
            logger.warning("took over %s (%s) from %s", record.number, record.state, holder)
        else:
            why = "no worker took it up within a lease (its wake-up was lost)"
            detail = {"by": self.leases.holder, "state": record.state, "why": why}
            self._records.note(record.id, ACTOR, "taken_up", detail, now)
            logger.warning("took up %s (%s): %s", record.number, record.state, why)
        self.resume(record, now)

    def resume(self, record: Any, now: datetime) -> None:
        """After a take-over is audited, put `record` where its new run starts from; by
        default it starts where it stands."""
