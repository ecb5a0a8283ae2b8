"""Releases rolled out in a worker's threads, and taken over when the worker dies.

The desk (or the catalog's deploy-release fulfillment) records an approved release with no
lease and wakes a worker (`roll-out-release`); the worker leases the oldest release nobody
carries and runs its `deploy-release` flow in a thread of its own (`Carrier`), passing its
own lease holder so the run and the worker's keeper renew one lease. A release whose worker
died (its lease lapsed) is taken over: its dead runs are marked Crashed, the take-over is
audited, and a new run finds the release rolling out, rolls back every host the record says
was changed and closes the maintenance windows the dead run left open, so the rollout ends
failed rather than half-done and no host's alerts stay suppressed after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import tags

from opsflow.desk.runners.carrier import RecordCarrier
from opsflow.itsm.releases import CARRIED_STATES
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.releases import LEASE_PREFIX

DEFAULT_MAX_RUNNING = 8
"""Releases one worker rolls out at once: each restarts services host by host."""


class ReleaseRunner(RecordCarrier):
    """Runs each release's rollout in its own daemon thread of a worker process.

    Args:
        store: the records holding the releases and their leases.
        run: runs the rollout of one release (number, lease holder) in the calling thread.
        max_running: most releases rolled out here at once.
        lease_s: how long this process's leases last without renewal.
    """

    def __init__(
        self,
        store: Records,
        run: Callable[[str, str], Any] | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
        lease_s: float | None = None,
    ) -> None:
        super().__init__(
            store, store.releases, LEASE_PREFIX, CARRIED_STATES, "rolling out", lease_s, max_running
        )
        self._releases = store.releases
        self._run = run or _run_rollout

    def carry(self, item_id: int) -> None:
        """Run the release's rollout here, to its end."""
        self._run(self._releases.get(item_id).number, self.leases.holder)


def _run_rollout(number: str, holder: str) -> Any:
    from opsflow.flows.application_deploy import deploy_release

    with tags("itil:release-deployment"):
        return deploy_release(number, lease_holder=holder)
