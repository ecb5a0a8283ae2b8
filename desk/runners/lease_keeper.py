"""Leases on the work a worker process carries, renewed while it lives, taken over when it dies."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID, uuid4

from opsflow.itsm.store.leases import Leases

logger = logging.getLogger("opsflow.desk.leases")

TakeOver = Literal["carried", "finished", "later"]


class LeaseKeeper:
    """Holds `prefix…` leases for this process and renews them from a thread of its own.

    Every pass it also offers `take_over(name, holder)` the leases of that prefix whose
    holder stopped renewing (another worker, or this one before a restart), once this process
    has taken them, and the work `unleased(now)` names that nobody has leased yet (holder
    ""), such as incidents or requests whose wake-up reached no worker. `take_over`
    answers "carried" (it carries the work on, the lease stays held), "finished" (nothing is
    left to do: the lease is given back) or "later" (it cannot now: the lease lapses again
    for the next pass or another worker).

    Args:
        leases: the records store's leases.
        prefix: the kind of work, e.g. "request:".
        lease_s: how long a lease lasts without renewal; renewed every third of it (<= 5 s).
        take_over: called with (name, previous holder) for each lease taken over.
        unleased: lease names (of the prefix) of work that should be carried but that no
            lease covers.
    """

    def __init__(
        self,
        leases: Leases,
        prefix: str,
        lease_s: float,
        take_over: Callable[[str, str], TakeOver],
        unleased: Callable[[datetime], list[str]] = lambda now: [],
    ) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self.lease_s = lease_s
        self._leases = leases
        self._prefix = prefix
        self._take_over = take_over
        self._unleased = unleased
        self._held: set[str] = set()
        self._taking: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, name: str) -> bool:
        """Take the lease on `name` for this process; False while another holder's runs, or
        while a thread of this process holds it already (its work is being carried here)."""
        with self._lock:
            if name in self._held or name in self._taking:
                return False
            self._taking.add(name)
        taken = False
        try:
            taken = self._leases.take(name, self.holder, datetime.now(UTC), self.lease_s)
        finally:
            with self._lock:
                self._taking.discard(name)
                if taken:
                    self._held.add(name)
        return taken

    def release(self, name: str) -> None:
        """The work on `name` is over: give the lease back."""
        with self._lock:
            self._held.discard(name)
        self._leases.release(name, self.holder)

    def start(self) -> None:
        """Start renewing, and taking over the work of processes that stopped."""
        self._thread = threading.Thread(
            target=self._keep, name=f"leases-{self._prefix}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and let this process's leases lapse now: it is going away, so the
        next worker to look (another, or this one restarted) takes its work over at once."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            held = sorted(self._held)
        self._leases.renew(self.holder, held, datetime.now(UTC))

    def take_over_lapsed(self) -> list[str]:
        """Offer `take_over` every lapsed lease of the prefix this process could take, and
        the unleased work."""
        now = datetime.now(UTC)
        found = self._leases.lapsed(self._prefix, now)
        found += [(name, "") for name in self._unleased(now)]
        taken = []
        for name, holder in found:
            if not self.hold(name):
                continue
            try:
                outcome = self._take_over(name, holder)
            except Exception:
                self.let_lapse(name)
                raise
            if outcome == "carried":
                taken.append(name)
            elif outcome == "finished":
                self.release(name)
            else:
                self.let_lapse(name)
        return taken

    def let_lapse(self, name: str) -> None:
        """Stop renewing `name` and let it lapse now (if still held), for whoever looks next."""
        with self._lock:
            self._held.discard(name)
        self._leases.renew(self.holder, [name], datetime.now(UTC))

    def _keep(self) -> None:
        while True:
            try:
                with self._lock:
                    held = sorted(self._held)
                until = datetime.now(UTC) + timedelta(seconds=self.lease_s)
                self._leases.renew(self.holder, held, until)
                self.take_over_lapsed()
            except Exception:
                logger.exception("keeping the %s leases failed; trying again", self._prefix)
            if self._stopped.wait(min(self.lease_s / 3, 5.0)):
                return


def crash_runs(run_ids: list[str], message: str) -> list[str]:
    """Mark the runs that are not finished Crashed (their process is gone); their ids."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    crashed = []
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            run = client.read_flow_run(UUID(run_id))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                crashed.append(run_id)
    return crashed
