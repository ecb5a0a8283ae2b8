"""The real desk app (store, estate, auth, intake) served like `desk.server`, minus the dispatcher.

Isolates the intake path from the triage that `python -m opsflow.desk.server` runs in its processes,
so the intake benchmark can tell their costs apart. Served from `--processes` processes on
one port, as the desk is.

    OPSFLOW_HOME=... OPSFLOW_INVENTORY=... .venv/bin/python -m bench.desk_intake_only --port N
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.desk.server import DEFAULT_PROCESSES, create_records, freeze_startup_objects
from opsflow.itsm.store.records import open_records
from opsflow.settings import get_settings


def intake_app() -> FastAPI:
    """The desk's app without dispatcher or runners, for one serving process."""
    estate = EstateCache(get_settings().estate_dir)
    estate()
    app = create_app(open_records(), estate)
    freeze_startup_objects()
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    args = parser.parse_args()
    create_records()
    uvicorn.run(
        "bench.desk_intake_only:intake_app",
        factory=True,
        workers=args.processes,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
