"""The real desk app (store, estate, auth, intake) served like `desk.server`, minus the dispatcher.

Isolates the intake path from the triage thread that `python -m desk.server` runs in the
same process (and the same GIL), so the intake benchmark can tell their costs apart.

    OPSFLOW_HOME=... OPSFLOW_INVENTORY=... .venv/bin/python -m bench.desk_intake_only --port N
"""

from __future__ import annotations

import argparse

import uvicorn

from desk.app import create_app
from desk.estate import EstateCache
from opsflow.settings import get_settings
from tasks.records import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    estate = EstateCache(get_settings().estate_dir)
    estate()
    app = create_app(open_store(), estate)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
