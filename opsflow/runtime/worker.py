"""`opsflow worker`: a process that triages, restores, fulfills requests and changes access.

Any number of workers, on any machines that reach the records database and the Prefect
server, subscribe to the wake-ups of `flows.work` as Prefect task workers; Prefect hands each
wake-up to one of them. Triage runs in one worker at a time (a lock on the records database,
released if its holder dies); the worker that opened an incident restores it at once while
it has room, and wakes another through Prefect when it has not; service requests and access
changes spread over the workers as Prefect hands out their wake-ups. Each runs under a lease
that another worker takes over if this one dies. Restorations run in the task worker's
threads (`limit` of them); requests and access changes in threads of their own runners,
bounded apart (`desk.runners.carrier`), so requests waiting hours for an approver never hold a slot
a restoration needs. Every worker also sweeps: events left pending, incidents left New and
requests or access changes left unleased (their wake-up went to a worker that died, or was
never sent) are picked up within a few seconds (events) or a lease (the rest), so no wake-up
has to be delivered exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from prefect import tags
from prefect.task_worker import TaskWorker

from opsflow.desk.runners.access_changes import DEFAULT_MAX_RUNNING as DEFAULT_MAX_ACCESS
from opsflow.desk.runners.access_changes import AccessRunner
from opsflow.desk.runners.dispatch import Dispatcher
from opsflow.desk.runners.fulfillments import DEFAULT_MAX_RUNNING as DEFAULT_MAX_REQUESTS
from opsflow.desk.runners.fulfillments import RequestRunner
from opsflow.desk.runners.releases import DEFAULT_MAX_RUNNING as DEFAULT_MAX_RELEASES
from opsflow.desk.runners.releases import ReleaseRunner
from opsflow.desk.runners.restorations import RestorationRunner
from opsflow.errors import OpsError
from opsflow.flows import work
from opsflow.itsm.records import Incident
from opsflow.itsm.releases import RELEASE_NUMBERING
from opsflow.itsm.requests import REQUEST_NUMBERING
from opsflow.itsm.store.event_notices import listen_for_stored_events
from opsflow.itsm.store.exclusive import exclusive
from opsflow.itsm.store.metrics import oldest_pending
from opsflow.itsm.store.records import Records, open_records
from opsflow.logs import configure_logging
from opsflow.runtime import worker_metrics
from opsflow.runtime.flow_runs import run_flow_here
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.ssh_connections import warm_connection

logger = logging.getLogger("opsflow.worker")

DEFAULT_LIMIT = 16
"""Wake-ups (so restorations) one worker runs at once: each mostly waits on SSH. Requests and
access changes are bounded by their runners (`max_running`), apart from this."""
SWEEP_S = 2.0
"""How often a worker looks for pending events that no wake-up reached."""


class Worker:
    """Serves opsflow's wake-ups from this process, with the sweeps that make them safe to lose.

    Args:
        store: the records store (default: the process's).
        limit: wake-ups (so restorations) running at once here.
        lease_s: how long this worker's leases last without renewal (default: the settings').
        requests: service requests carried here at once, paused ones included.
        access_changes: grants and revocations carried out here at once.
        releases: releases rolled out here at once.
    """

    def __init__(
        self,
        store: Records | None = None,
        limit: int = DEFAULT_LIMIT,
        lease_s: float | None = None,
        requests: int = DEFAULT_MAX_REQUESTS,
        access_changes: int = DEFAULT_MAX_ACCESS,
        releases: int = DEFAULT_MAX_RELEASES,
    ) -> None:
        self.store = store or open_records()
        self.restorations = RestorationRunner(
            self.store, self._restore, lease_s=lease_s, max_running=limit
        )
        self.requests = RequestRunner(self.store, max_running=requests, lease_s=lease_s)
        self.access = AccessRunner(self.store, max_running=access_changes, lease_s=lease_s)
        self.releases = ReleaseRunner(self.store, max_running=releases, lease_s=lease_s)
        self.triage = Dispatcher(self._triage_pass)
        self._limit = limit
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._task_worker: TaskWorker | None = None

    def triage_soon(self) -> None:
        """A wake-up said events were stored: a triage pass follows here."""
        self.triage.notify()

    def restore_next(self) -> str | None:
        """A wake-up said an incident waits: restore the oldest one nobody carries."""
        return self.restorations.run_next()

    def fulfill_next(self) -> str | None:
        """A wake-up said a request was submitted: start carrying the oldest nobody carries."""
        request_id = self.requests.run_next()
        return None if request_id is None else REQUEST_NUMBERING.number(request_id)

    def provision_next(self) -> int | None:
        """A wake-up said an access change waits: start the oldest nobody carries."""
        return self.access.run_next()

    def deploy_next(self) -> str | None:
        """A wake-up said a release was recorded: start rolling out the oldest nobody carries."""
        release_id = self.releases.run_next()
        return None if release_id is None else RELEASE_NUMBERING.number(release_id)

    def wake_ups_in_flight(self) -> int:
        """Wake-ups running now in this worker's task worker (restorations woken from elsewhere)."""
        worker = self._task_worker
        return 0 if worker is None else int(worker.current_tasks or 0)

    def start(self) -> None:
        """Start taking wake-ups (the server keeps those sent meanwhile) and sweeping."""
        work.install(self)
        worker_metrics.watch(self)
        self.triage.start()
        self.restorations.keep()
        self.requests.keep()
        self.access.keep()
        self.releases.keep()
        for target, name in (
            (self._serve, "task-worker"),
            (self._sweep, "sweep"),
            (self._listen, "event-notices"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._ready.wait(30):
            raise RuntimeError("the task worker did not start within 30 s")

    def stop(self) -> None:
        """Stop taking wake-ups, let restorations running here finish or lapse, stop sweeping;
        requests and access changes still running here are for another worker to take over."""
        self._stopped.set()
        if self._loop is not None and self._serving is not None:
            self._loop.call_soon_threadsafe(self._serving.cancel)
        for thread in self._threads:
            thread.join(30)
        self.triage.stop()
        self.restorations.stop()
        self.requests.stop()
        self.access.stop()
        self.releases.stop()
        work.uninstall(self)

    def _serve(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._serving = asyncio.current_task()
            worker = self._task_worker = TaskWorker(*work.WAKE_UPS, limit=self._limit)
            self._ready.set()
            await worker.astart()

        try:
            asyncio.run(serve())
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("the task worker stopped")

    def _sweep(self) -> None:
        while not self._stopped.wait(SWEEP_S):
            try:
                oldest = self.store.events.backlog().oldest_received_at
            except Exception:
                logger.exception("could not read the triage backlog; trying again")
                continue
            if oldest is not None and (datetime.now(UTC) - oldest).total_seconds() > SWEEP_S:
                self.triage.notify()

    def _listen(self) -> None:
        listen_for_stored_events(self.store.db, self.triage.notify, self._stopped)

    def restore_here(self) -> bool:
        """Start restoring the next incident nobody carries in a thread here, unless full."""
        if self.restorations.running >= self._limit:
            return False
        threading.Thread(target=self.restorations.run_next, name="restore", daemon=True).start()
        return True

    def _triage_pass(self) -> bool:
        from opsflow.flows.event_triage import event_triage

        with exclusive(self.store.db, "event-triage"), tags("itil:event"):
            with self.store.db.read() as conn:
                oldest = oldest_pending(conn)
            # A doubled wake-up finds nothing: no empty run for the Prefect UI then.
            if oldest is None:
                return False
            return worker_metrics.observe_triage(lambda: run_flow_here(event_triage), oldest)

    def _restore(self, record: Incident, lease_holder: str | None) -> str:
        from opsflow.flows.incident_restoration import incident_restoration

        if record.host:
            threading.Thread(
                target=self._warm_ssh, args=(record.host,), name="warm-ssh", daemon=True
            ).start()
        # Tags on the flow run only: its task runs carry none (`tasks.untagged`).
        with tags("itil:incident", *([f"host:{record.host}"] if record.host else [])):
            return run_flow_here(incident_restoration, record.number, lease_holder=lease_holder)

    @staticmethod
    def _warm_ssh(host_name: str) -> None:
        """Open the host's SSH connection while Prefect starts the restoration's run
        (~0.25 s), so that the runbook's first command does not wait for the handshake."""
        try:
            host = read_estate.fn().host(host_name)
        except (OpsError, KeyError):
            return  # the restoration itself says why it cannot act on this host
        warm_connection(host)


def run_worker(
    limit: int = DEFAULT_LIMIT,
    requests: int = DEFAULT_MAX_REQUESTS,
    access_changes: int = DEFAULT_MAX_ACCESS,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
) -> None:
    """Run a worker in this process until SIGTERM or Ctrl-C (arguments as `Worker`'s), with
    its `/metrics` on `metrics_host`:`metrics_port` (0: a free port, which it logs)."""
    configure_logging()
    port = worker_metrics.serve_metrics(metrics_host, metrics_port)
    worker = Worker(limit=limit, requests=requests, access_changes=access_changes)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.start()
    logger.info(
        "worker serving %s; metrics on http://%s:%d/metrics",
        ", ".join(t.name for t in work.WAKE_UPS),
        metrics_host,
        port,
    )
    stopping.wait()
    worker.stop()


def main() -> None:
    """`python -m opsflow.runtime.worker [--limit N] [--requests N] [--access-changes N]
    [--nice N] [--metrics-host HOST] [--metrics-port PORT]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help="wake-ups (restorations) at once"
    )
    parser.add_argument(
        "--requests", type=int, default=DEFAULT_MAX_REQUESTS, help="requests carried at once"
    )
    parser.add_argument(
        "--access-changes", type=int, default=DEFAULT_MAX_ACCESS, help="access changes at once"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="lower this worker's CPU priority by N, on a machine it shares with a desk: a "
        "sender waiting for its 202 cannot wait, a triage backlog can",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of this worker's /metrics"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="port of this worker's /metrics (default: a free one, named in the log)",
    )
    args = parser.parse_args()
    os.nice(args.nice)
    run_worker(args.limit, args.requests, args.access_changes, args.metrics_host, args.metrics_port)


if __name__ == "__main__":
    main()
