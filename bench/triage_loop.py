"""Triage in a process of its own, as the workers will run it: the event-triage flow in a loop.

A stand-in for the desk's triage leaving the desk process (the intake benchmark's
`desk-front` target): while events wait, it runs `event_triage`
as the desk's dispatcher does, then looks again every 50 ms. One such process, so its runs
never overlap (two triage runs over the same pending events double-count them). It runs at
a lower CPU priority (`--nice`, 10 by default): a backlog of triage can wait, a sender
waiting for its 202 cannot, and on two cores they compete.

    OPSFLOW_DATABASE_URL=... PREFECT_API_URL=... .venv/bin/python -m bench.triage_loop
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from prefect import tags

from opsflow.flows.event_triage import event_triage
from opsflow.itsm.store.records import open_records
from opsflow.runtime.flow_runs import run_flow_here

logger = logging.getLogger("opsflow.bench.triage_loop")
IDLE_S = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nice", type=int, default=10, help="added to the CPU niceness")
    os.nice(parser.parse_args().nice)
    store = open_records()
    while True:
        if not store.events.backlog().pending:
            time.sleep(IDLE_S)
            continue
        try:
            with tags("itil:event"):
                run_flow_here(event_triage)
        except Exception:
            logger.exception("event triage failed; trying again in 1 s")
            time.sleep(1)


if __name__ == "__main__":
    main()
