"""Access changes carried out in a worker's threads: grants put in place, revocations, expiry.

The desk records an approval or a revocation and wakes a worker (`provision-access`); the
worker leases the oldest grant waiting for a change (`AccessGrant.pending_change`) and runs
`grant-access` or `revoke-access` for it in a thread of its own (`Carrier`), a few at a time.
A grant whose worker died mid-change is taken over once its lease lapses (its dead runs
marked Crashed, the take-over audited), and a change no worker took up within a lease is
taken up by the sweep. Each grant a worker activates is also expired by that worker at its
end, to the second; grants whose worker stopped are the scheduled `expire-access`
deployment's, which also retries revocations that failed.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import tags

from opsflow.desk.runners.carrier import ACTOR, Carrier
from opsflow.desk.runners.lease_keeper import crash_runs
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.store.access import LEASE_PREFIX
from opsflow.itsm.store.records import Records

logger = logging.getLogger("opsflow.desk.access")

DEFAULT_MAX_RUNNING = 4
"""Access changes one worker carries out at once; each fans out over its hosts itself."""


class AccessRunner(Carrier):
    """Carries out grants and revocations in threads of a worker, and expiry at each end.

    Expiry has one thread of its own, sleeping until the next active grant it knows of ends;
    each run takes away every grant due, so one run at a time is enough.

    Args:
        store: the records holding the access grants and their leases.
        grant: puts one grant in place (by id) in the calling thread.
        revoke: takes one grant away (by id, with who asked) in the calling thread.
        expire: takes away every grant due.
        max_running: most changes carried out here at once.
        lease_s: how long this process's leases last without renewal.
    """

    def __init__(
        self,
        store: Records,
        grant: Callable[[int], Any] | None = None,
        revoke: Callable[[int, str], Any] | None = None,
        expire: Callable[[], Any] | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
        lease_s: float | None = None,
    ) -> None:
        super().__init__(store, LEASE_PREFIX, lease_s, max_running)
        self._grants = store.access
        self._grant = grant or _run_grant
        self._revoke = revoke or _run_revoke
        self._expire = expire or _run_expire
        self._wake = threading.Condition()
        self._ends: list[tuple[float, int]] = []  # heap of (end as a UNIX time, grant id)
        self._expiry_thread: threading.Thread | None = None
        self._no_expiry = False

    def waiting(self, changed_before: datetime | None) -> list[int]:
        """Grants waiting for a change on hosts that no lease covers, oldest first."""
        return self._grants.unclaimed(changed_before)

    def needs_carrying(self, item_id: int) -> bool:
        """Whether the grant, read now, still waits for a change on hosts."""
        return self._grants.get(item_id).pending_change is not None

    def carry(self, item_id: int) -> None:
        """Put the grant in place or take it away, as it waits for; then arrange its expiry.

        A revocation asked for while the grant was being put in place follows at once. A
        failure on hosts is recorded on the grant by the flow (`last_error`) and logged here;
        the grant then waits for a person (a grant) or for `expire-access` (a revocation).
        Any other failure is raised, for the carrier to try again later.
        """
        grant = self._grants.get(item_id)
        change = grant.pending_change
        while change is not None:
            try:
                if change == "grant":
                    self._grant(grant.id)
                else:
                    self._revoke(grant.id, grant.revoke_requested_by or ACTOR)
            except Exception as exc:
                grant = self._grants.get(item_id)
                if grant.pending_change is None and grant.last_error is None:
                    return  # ended meanwhile (by `expire-access`, say): nothing left to do
                if grant.pending_change not in (None, change):
                    change = grant.pending_change  # revoked meanwhile: the grant stopped
                    continue
                if grant.last_error is None:
                    raise
                logger.error("%s of access grant %s failed (recorded): %s", change, item_id, exc)
                return
            grant = self._grants.get(item_id)
            if grant.pending_change == change:
                return  # not done, not failed: a person or `expire-access` decides
            change = grant.pending_change
        self.schedule_expiry(grant)

    def note_take_over(self, item_id: int, holder: str) -> None:
        """Crash the stopped holder's runs and audit who carries the change on, and why."""
        grant = self._grants.get(item_id)
        now = datetime.now(UTC)
        detail: dict[str, Any] = {"by": self.leases.holder, "change": grant.pending_change}
        if holder:
            detail["from"] = holder
            detail["crashed_runs"] = crash_runs(
                grant.flow_run_ids, f"{holder} stopped while changing access grant {grant.id}"
            )
            self._grants.note(grant.id, ACTOR, "taken_over", detail, now)
            logger.warning("took over access grant %s from %s", grant.id, holder)
        else:
            detail["why"] = "no worker took it up within a lease (its wake-up was lost)"
            self._grants.note(grant.id, ACTOR, "taken_up", detail, now)
            logger.warning("took up access grant %s: %s", grant.id, detail["why"])

    # -- expiry -------------------------------------------------------------------------------

    def schedule_expiry(self, grant: AccessGrant) -> None:
        """Run expiry when an active grant ends (the scheduled deployment is the backstop)."""
        if grant.state != "active" or grant.ends_at is None:
            return
        with self._wake:
            if self._no_expiry:
                return
            heapq.heappush(self._ends, (grant.ends_at.timestamp(), grant.id))
            if self._expiry_thread is None:
                self._expiry_thread = threading.Thread(
                    target=self._expire_when_due, name="access-expiry", daemon=True
                )
                self._expiry_thread.start()
            self._wake.notify()

    def _expire_when_due(self) -> None:
        while True:
            with self._wake:
                while not self._no_expiry and (not self._ends or self._ends[0][0] > time.time()):
                    self._wake.wait(self._ends[0][0] - time.time() if self._ends else None)
                if self._no_expiry:
                    return
                while self._ends and self._ends[0][0] <= time.time():
                    heapq.heappop(self._ends)
            try:
                self._expire()
            except Exception:
                logger.exception("expiring access grants failed; the next run retries")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop expiring and renewing: the changes still running here are for the next worker
        to take over, the grants it activated for `expire-access` to expire."""
        with self._wake:
            self._no_expiry = True
            self._wake.notify()
        if self._expiry_thread is not None:
            self._expiry_thread.join(timeout_s)
        super().stop()


def _run_grant(grant_id: int) -> Any:
    from opsflow.flows.access_provisioning import grant_access

    with tags("itil:access"):
        return grant_access(grant_id)


def _run_revoke(grant_id: int, actor: str) -> Any:
    from opsflow.flows.access_provisioning import revoke_access

    with tags("itil:access"):
        return revoke_access(grant_id, actor=actor)


def _run_expire() -> Any:
    from opsflow.flows.access_provisioning import expire_access

    with tags("itil:access"):
        return expire_access()
