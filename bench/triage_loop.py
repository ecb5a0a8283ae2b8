"""Triage in a process of its own, as the workers will run it: the event-triage flow in a loop.

A stand-in for the desk's triage leaving the desk process (the intake benchmark's
`desk-front` target): while events wait, it runs `event_triage(start_restoration=False)`
as the desk's dispatcher does, then looks again every 50 ms. One such process, so its runs
never overlap (two triage runs over the same pending events double-count them).

    OPSFLOW_DATABASE_URL=... PREFECT_API_URL=... .venv/bin/python -m bench.triage_loop
"""

from __future__ import annotations

import logging
import time

from prefect import tags

from desk.dispatch import without_heartbeats
from flows.event_triage import event_triage
from tasks.records import open_store

logger = logging.getLogger("opsflow.bench.triage_loop")
IDLE_S = 0.05


def main() -> None:
    store = open_store()
    while True:
        if not store.triage_backlog().pending:
            time.sleep(IDLE_S)
            continue
        try:
            with tags("itil:event"):
                without_heartbeats(event_triage, start_restoration=False)
        except Exception:
            logger.exception("event triage failed; trying again in 1 s")
            time.sleep(1)


if __name__ == "__main__":
    main()
