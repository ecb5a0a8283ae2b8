"""`opsflow worker`: a process that triages events and restores incidents as Prefect asks.

Any number of workers, on any machines that reach the records database and the Prefect
server, subscribe to the wake-ups of `flows.work` as Prefect task workers; Prefect hands each
wake-up to one of them. Triage runs in one worker at a time (a lock on the records database,
released if its holder dies); the worker that opened an incident restores it at once while
it has room, and wakes another through Prefect when it has not; each restoration runs under
a lease that another worker takes over if this one dies. Every worker also sweeps: events
left pending and incidents left New (their wake-up went to a worker that died) are picked
up within a few seconds, so no wake-up has to be delivered exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from prefect import tags
from prefect.task_worker import TaskWorker

from desk.dispatch import Dispatcher, without_heartbeats
from desk.restorations import RestorationRunner
from flows import work
from itsm.exclusive import exclusive
from itsm.store import Store
from tasks.records import open_store

logger = logging.getLogger("opsflow.worker")

DEFAULT_LIMIT = 16
"""Wake-ups (so restorations) one worker runs at once: each mostly waits on SSH."""
SWEEP_S = 2.0
"""How often a worker looks for pending events that no wake-up reached."""


class Worker:
    """Serves opsflow's wake-ups from this process, with the sweeps that make them safe to lose.

    Args:
        store: the records store (default: the process's).
        limit: wake-ups running at once here.
        lease_s: how long this worker's restoration leases last without renewal.
    """

    def __init__(
        self, store: Store | None = None, limit: int = DEFAULT_LIMIT, lease_s: float | None = None
    ) -> None:
        self.store = store or open_store()
        self.restorations = RestorationRunner(
            self.store, self._restore, lease_s=lease_s, max_running=limit
        )
        self.triage = Dispatcher(self._triage_pass)
        self._limit = limit
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving: asyncio.Task[None] | None = None
        self._ready = threading.Event()

    def triage_soon(self) -> None:
        """A wake-up said events were stored: a triage pass follows here."""
        self.triage.notify()

    def restore_next(self) -> str | None:
        """A wake-up said an incident waits: restore the oldest one nobody carries."""
        return self.restorations.run_next()

    def start(self) -> None:
        """Start taking wake-ups (the server keeps those sent meanwhile) and sweeping."""
        work.install(self)
        self.triage.start()
        self.restorations.keep()
        for target, name in ((self._serve, "task-worker"), (self._sweep, "sweep")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._ready.wait(30):
            raise RuntimeError("the task worker did not start within 30 s")

    def stop(self) -> None:
        """Stop taking wake-ups, let restorations running here finish or lapse, stop sweeping."""
        self._stopped.set()
        if self._loop is not None and self._serving is not None:
            self._loop.call_soon_threadsafe(self._serving.cancel)
        for thread in self._threads:
            thread.join(30)
        self.triage.stop()
        self.restorations.stop()
        work.install(None)

    def _serve(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._serving = asyncio.current_task()
            worker = TaskWorker(*work.WAKE_UPS, limit=self._limit)
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
                oldest = self.store.triage_backlog().oldest_received_at
            except Exception:
                logger.exception("could not read the triage backlog; trying again")
                continue
            if oldest is not None and (datetime.now(UTC) - oldest).total_seconds() > SWEEP_S:
                self.triage.notify()

    def restore_here(self) -> bool:
        """Start restoring the next incident nobody carries in a thread here, unless full."""
        if self.restorations.running >= self._limit:
            return False
        threading.Thread(target=self.restorations.run_next, name="restore", daemon=True).start()
        return True

    def _triage_pass(self) -> bool:
        from flows.event_triage import event_triage

        with exclusive(self.store, "event-triage"), tags("itil:event"):
            return bool(without_heartbeats(event_triage))

    def _restore(self, number: str, lease_holder: str | None) -> str:
        from flows.incident_restoration import incident_restoration

        # One fixed tag set: Prefect keeps a client thread per distinct set of tags.
        with tags("itil:incident"):
            return without_heartbeats(incident_restoration, number, lease_holder=lease_holder)


def run_worker(limit: int = DEFAULT_LIMIT) -> None:
    """Run a worker in this process until SIGTERM or Ctrl-C."""
    # Prefect configured logging at import: basicConfig would do nothing now.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("opsflow").addHandler(handler)
    logging.getLogger("opsflow").setLevel(logging.INFO)
    worker = Worker(limit=limit)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.start()
    logger.info("worker serving %s", ", ".join(t.name for t in work.WAKE_UPS))
    stopping.wait()
    worker.stop()


def main() -> None:
    """`python -m opsflow.runtime.worker [--limit N]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="wake-ups at once")
    run_worker(parser.parse_args().limit)


if __name__ == "__main__":
    main()
