"""Run the desk: HTTP API and intake; triage goes to the workers (`python -m desk.server`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from desk.app import create_app
from desk.dispatch import Dispatcher
from desk.estate import EstateCache, EstateUnavailableError
from flows.work import triage_events
from opsflow.settings import get_settings
from tasks.events import publish_incident_change
from tasks.records import open_store

DEFAULT_PORT = 8765


def build_desk(estate_dir: Path | None = None) -> tuple[FastAPI, Dispatcher]:
    """The desk app wired to the store, the estate and a dispatcher (not yet started).

    The desk records and answers; it runs no flow. It hands triage to the workers
    (`opsflow worker`) through Prefect, and wakes them for the requests and access changes
    it records (`desk.wake_ups`).
    """
    estate = EstateCache(estate_dir or get_settings().estate_dir)
    with suppress(EstateUnavailableError):
        estate()  # load it now; if it does not, the desk answers 503 until it does

    dispatcher = Dispatcher(triage=wake_triage)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher.start()
        yield
        dispatcher.stop()

    app = create_app(
        open_store(),
        estate,
        on_events=dispatcher.notify,
        lifespan=lifespan,
        on_incident_change=publish_incident_change,
    )
    app.state.dispatcher = dispatcher
    return app, dispatcher


def wake_triage() -> bool:
    """Ask Prefect for a triage pass in one of the workers; the workers coalesce them."""
    triage_events.delay()
    return False


def main() -> None:
    """Serve the desk on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app, _ = build_desk()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
