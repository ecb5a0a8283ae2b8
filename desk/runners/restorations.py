"""Restorations in a worker's threads, and carried on when their process stopped.

A worker woken for an incident leases it before its restoration flow starts (`run_next`),
and the flow renews the lease while it runs (`flows.incident_restoration`). This runner's
`LeaseKeeper` looks every few seconds for restorations whose lease lapsed (their worker died
mid-restoration) and for incidents opened with a runbook that are still New and unleased
(their wake-up reached no worker); it takes the lease, marks the dead runs Crashed and runs
the restoration again under that lease. Remediation may have half-run: the runbook's
diagnosis and status checks decide what is left to do, and the lease keeps it to one run at
a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from opsflow.desk.runners.carrier import ACTOR, LeasedThreads
from opsflow.desk.runners.lease_keeper import TakeOver, crash_runs
from opsflow.itsm.records import Incident, left_to_automation
from opsflow.itsm.store.leases import RESTORATION_PREFIX, incident_of
from opsflow.itsm.store.records import Records

logger = logging.getLogger("opsflow.desk.restorations")

Restore = Callable[[Incident, str | None], Any]
"""Runs the restoration of an incident in this thread, under a lease holder or its own."""


class RestorationRunner(LeasedThreads):
    """Runs restorations in a worker's threads and takes over those whose worker stopped.

    Args:
        store: the records store.
        restore: runs one restoration flow in the calling thread.
        lease_s: how long this desk's leases last without renewal (default: the settings').
        max_running: most restorations taken over and running here at once.
    """

    def __init__(
        self,
        store: Records,
        restore: Restore,
        lease_s: float | None = None,
        max_running: int = 8,
    ) -> None:
        super().__init__(store, RESTORATION_PREFIX, lease_s, max_running)
        self._store = store
        self._restore = restore
        self._leases = store.leases

    def run_next(self) -> str | None:
        """Restore, here and now, the oldest incident waiting for a restoration nobody carries;
        its number, or None when there is none (another worker took it first).

        The lease is taken before the flow starts, so two workers woken for the same incident
        never both start a run: the loser moves on to the next incident or returns.
        """
        for name in self._leases.unclaimed_restorations(datetime.now(UTC)):
            if not self.leases.hold(name):
                continue
            record = self._store.incidents.get(incident_of(name))
            if not left_to_automation(record) or not record.runbook or not self._reserve():
                self.leases.let_lapse(name)
                return None
            self._work(record, name)
            return record.number
        return None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let the restorations taken over here finish (up to `timeout_s`), then stop looking;
        any still running then are for the next desk to carry on."""
        self.wait_idle(timeout_s)
        self.leases.stop()

    def _unleased(self, now: datetime) -> list[str]:
        """Incidents New for longer than a lease with no restoration: their start was lost."""
        return self._leases.unclaimed_restorations(now - timedelta(seconds=self.leases.lease_s))

    def _take_over(self, name: str, holder: str) -> TakeOver:
        """Carry on the restoration `name`, whose lease this desk now holds."""
        record = self._store.incidents.get(incident_of(name))
        if not left_to_automation(record) or not record.runbook:
            return "finished"  # resolved or escalated before its lease was given back
        if not self._reserve():
            return "later"
        try:
            self._note_take_over(record, holder)
            threading.Thread(
                target=self._work,
                args=(record, name),
                name=f"restore-{record.number}",
                daemon=True,
            ).start()
        except BaseException:
            self._done()
            raise
        return "carried"

    def _note_take_over(self, record: Incident, holder: str) -> None:
        """Crash the stopped holder's runs and say in the worklog why restoration starts again."""
        if holder:
            crashed = crash_runs(
                record.flow_run_ids, f"{holder} stopped while restoring {record.number}"
            )
            note = f"restoration taken over from {holder}, which stopped"
            if crashed:
                note += f" (its runs {', '.join(crashed)} marked Crashed)"
        else:
            note = f"no restoration started while {record.number} was New: starting one"
        self._store.worklog.add(record.id, ACTOR, note, datetime.now(UTC))
        logger.warning("%s: %s", record.number, note)

    def _work(self, record: Incident, name: str) -> None:
        try:
            self._restore(record, self.leases.holder)
        except Exception:
            logger.exception("the restoration of %s taken over here failed", record.number)
        finally:
            # Released by the flow once its outcome is recorded; if it could not record
            # one, the lease lapses now and the next pass tries again.
            self.leases.let_lapse(name)
            self._done()
