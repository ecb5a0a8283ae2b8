"""Run the desk: HTTP API plus triage and restoration dispatcher (`python -m desk.server`)."""

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
from prefect import tags

from desk.api_access import AccessRunner
from desk.api_requests import RequestRunner
from desk.app import create_app
from desk.dispatch import Dispatcher, without_heartbeats
from desk.estate import EstateCache, EstateUnavailableError
from desk.restorations import RestorationRunner
from itsm.access_store import AccessStore
from itsm.request_store import RequestStore
from itsm.store import Store
from opsflow.settings import get_settings
from tasks.events import publish_incident_change
from tasks.records import open_store

DEFAULT_PORT = 8765


def build_desk(estate_dir: Path | None = None) -> tuple[FastAPI, Dispatcher]:
    """The desk app wired to the store, the estate and a dispatcher (not yet started)."""
    from flows.event_triage import event_triage
    from flows.incident_restoration import incident_restoration

    estate = EstateCache(estate_dir or get_settings().estate_dir)
    with suppress(EstateUnavailableError):
        estate()  # load it now; if it does not, the desk answers 503 until it does

    def triage() -> list[dict]:
        with tags("itil:event"):
            return without_heartbeats(event_triage, start_restoration=False)

    def restore(number: str, lease_holder: str | None) -> str:
        # One fixed tag set: Prefect keeps a client thread per distinct set of tags.
        with tags("itil:incident"):
            return without_heartbeats(incident_restoration, number, lease_holder=lease_holder)

    restoration_runner = RestorationRunner(open_store(), restore)
    dispatcher = Dispatcher(triage=triage, restore=restoration_runner.run)
    access_runner = AccessRunner()
    request_runner = RequestRunner(RequestStore(open_store()))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher.start()
        restoration_runner.keep()
        request_runner.keep()
        access_runner.keep(AccessStore(open_store()))
        yield
        request_runner.stop()
        dispatcher.stop()
        restoration_runner.stop()
        access_runner.stop()

    app = create_app(
        open_store(),
        estate,
        on_events=dispatcher.notify,
        lifespan=lifespan,
        on_incident_change=publish_incident_change,
    )
    app.state.access_runner = access_runner
    app.state.dispatcher = dispatcher
    app.state.request_runner = request_runner
    return app, dispatcher


DEFAULT_PROCESSES = 2
"""Desk processes serving the port by default: on two cores, two carry about twice the
intake of one (bench/results/README.md, 2026-12-02); the group commit, the store's pool and
the lifespan are per process."""
PR_SET_PDEATHSIG = 1
"""prctl option: the signal this process gets when the process that started it dies."""


def desk_app() -> FastAPI:
    """The desk app of one serving process: uvicorn's factory, called in each process."""
    if multiprocessing.parent_process() is not None:
        _exit_with_parent()
    logging.basicConfig(level=logging.INFO)
    app, _ = build_desk()
    freeze_startup_objects()
    return app


def freeze_startup_objects() -> None:
    """Leave what startup made (Prefect, FastAPI, pydantic: ~170,000 objects) out of the
    garbage collector's full passes: each such pass scanned them all, ~0.1 s in which the
    process answered nothing, about once a second under intake load."""
    gc.collect()
    gc.freeze()


def create_records() -> None:
    """Create the records' tables before several processes open them at once.

    Each `Store` creates the tables it misses when it opens; on a new PostgreSQL database,
    processes doing so together collide (the check and the CREATE are not one step).
    """
    import itsm.access_store
    import itsm.facts_store
    import itsm.leases
    import itsm.maintenance_store
    import itsm.problem_store
    import itsm.request_store  # noqa: F401  (each defines tables of the records)

    Store().dispose()


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
    each with its own desk (group commit, store connections, runners); uvicorn replaces a
    process that dies, and the processes die with it.
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
    if args.processes == 1:
        uvicorn.run(desk_app(), host=args.host, port=args.port, log_level="warning")
        return
    create_records()
    uvicorn.run(
        "desk.server:desk_app",
        factory=True,
        workers=args.processes,
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
