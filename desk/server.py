"""The desk process's entrypoint: `desk.app` wired to the records, the estate and triage's
wake-ups, served over HTTP from one or several processes; triage goes to the workers.

`python -m opsflow.desk.server [--processes N]` (`opsflow up` starts it so).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache, EstateUnavailableError
from opsflow.desk.metrics import prepare_multiprocess_dir
from opsflow.desk.runners.dispatch import Dispatcher
from opsflow.flows.work import triage_events
from opsflow.itsm.store.records import open_records
from opsflow.logs import configure_logging
from opsflow.settings import get_settings
from opsflow.tasks.events import publish_incident_change, publish_record_change

DEFAULT_PORT = 8765

logger = logging.getLogger("opsflow.desk.server")


def build_desk(estate_dir: Path | None = None) -> tuple[FastAPI, Dispatcher]:
    """The desk app wired to the store, the estate and a dispatcher (not yet started).

    The desk records and answers; it runs no flow. Triage is the workers' (`opsflow
    worker`): PostgreSQL tells them of stored events, and on SQLite the desk wakes them
    through Prefect; it wakes them too for the requests and access changes it records
    (`desk.runners.wake_ups`).
    """
    estate = EstateCache(estate_dir or get_settings().estate_dir)
    with suppress(EstateUnavailableError):
        estate()  # load it now; if it does not, the desk answers 503 until it does

    records = open_records()
    dispatcher = Dispatcher(triage=wake_triage)
    # On PostgreSQL the insert's notice wakes every worker (itsm.store.event_notices) and
    # their sweeps cover a lost listener: a Prefect wake-up as well would only cost each
    # worker a task run per pass.
    wakes = records.db.dialect != "postgresql"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if wakes:
            dispatcher.start()
        yield
        if wakes:
            dispatcher.stop()

    app = create_app(
        records,
        estate,
        on_events=dispatcher.notify if wakes else lambda: None,
        lifespan=lifespan,
        on_incident_change=publish_incident_change,
        on_record_change=publish_record_change,
    )
    if wakes:
        app.state.dispatcher = dispatcher
    return app, dispatcher


def wake_triage() -> bool:
    """Ask Prefect for a triage pass in one of the workers; the workers coalesce them."""
    triage_events.delay()
    return False


DEFAULT_PROCESSES = 2
"""Desk processes serving the port by default: one per core of the 2-core machines we
measure on (each is one Python thread's worth of intake, the GIL's); a third measured no
better (bench/results/README.md, 2026-12-01). The group commit, the store's connections
and the lifespan are per process."""
HEALTHCHECK_S = 60
"""How long uvicorn waits for a desk process to answer its ping before killing it as hung. A
new process answers only once it has imported the desk (Prefect included: 3-4 s on an idle
2-core machine); at uvicorn's 5 s, on a busy machine (load 40-50, seen while tests ran) every
new process was killed before it answered and replaced, without end. A process that dies is
seen at once whatever this is."""
PR_SET_PDEATHSIG = 1
"""prctl option: the signal this process gets when the process that started it dies."""


def desk_app() -> FastAPI:
    """The desk app of one serving process: uvicorn's factory, called in each process."""
    if multiprocessing.parent_process() is not None:
        _exit_with_parent()
    configure_logging()  # after Prefect's import, which configured logging its way
    app, _ = build_desk()
    freeze_startup_objects()
    records = app.state.store.db.url
    logger.info(
        "desk process %d ready: records %s",
        os.getpid(),
        make_url(records).render_as_string(hide_password=True),
    )
    return app


def freeze_startup_objects() -> None:
    """Leave what startup made (Prefect, FastAPI, pydantic: ~170,000 objects) out of the
    garbage collector's full passes: each such pass scanned them all, ~0.1 s in which the
    process answered nothing, about once a second under intake load."""
    gc.collect()
    gc.freeze()


def create_records() -> None:
    """Bring the records' schema up to date once, before the serving processes open them."""
    from opsflow.itsm.migrations import upgrade

    upgrade()


def _exit_with_parent() -> None:
    """Make this serving process die with the one that started it (Linux).

    If the starting process is killed outright it cannot stop its serving processes; they
    would go on answering on the port as an orphaned desk, holding their leases.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # it died before the signal was asked for


def main() -> None:
    """Serve the desk on 127.0.0.1 until interrupted, from one or several processes.

    With `--processes N` above 1, uvicorn binds the port once and N processes accept on it,
    each with its own desk (group commit, store connections, triage wake-ups); uvicorn replaces a
    process that dies, and the processes die with it. They count their metrics in files of a
    directory under the home (`metrics/desk-PORT`, emptied here), so that whichever answers
    `/metrics` shows them all (`desk.metrics`).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--processes",
        type=int,
        default=DEFAULT_PROCESSES,
        help=f"processes serving the port (default {DEFAULT_PROCESSES})",
    )
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    configure_logging()
    # uvicorn's own logging config and access log stay off: `opsflow.logs` configures its
    # loggers, and `desk.access_log` logs requests without their query's secrets.
    if args.processes == 1:
        app = desk_app()
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
        return
    create_records()
    prepare_multiprocess_dir(get_settings().home / "metrics" / f"desk-{args.port}")
    uvicorn.run(
        "opsflow.desk.server:desk_app",
        factory=True,
        workers=args.processes,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_worker_healthcheck=HEALTHCHECK_S,
    )


if __name__ == "__main__":
    main()
