"""Tell every worker the moment events are stored, through PostgreSQL's LISTEN/NOTIFY.

The intake's insert notifies `CHANNEL` when it stores new events; PostgreSQL delivers the
notice on commit, once per transaction however many events, to every listening worker,
which starts a triage pass (the pass that gets the triage lock does the work). From the
desk's commit to a worker's pass this takes milliseconds; the desk's Prefect wake-up took
0.1-0.15 s (`bench.restore_latency`), a fifth of the closed loop's budget, and cost a worker
a Prefect task run per pass (single-alert intake rose from ~1,030 to ~1,730 requests/s when
the desk stopped sending them, `bench.intake` 2026-12-02). So on PostgreSQL the desk sends
no Prefect wake-up; the workers still sweep, for a listener that lost its connection misses
notices until it reconnects. SQLite has no notices: there the desk wakes the workers
through Prefect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsflow.itsm.store.db import Database

logger = logging.getLogger("opsflow.itsm.store.event_notices")

CHANNEL = "opsflow_events_stored"
"""The notice's channel; its payload is empty (the events table says what was stored)."""
RECONNECT_S = 2.0
"""Wait before listening again after the connection failed (the sweeps cover meanwhile)."""
WAIT_S = 1.0
"""Longest wait for a notice before looking whether the listener should stop."""


def listen_for_stored_events(
    db: Database, on_stored: Callable[[], None], stopped: threading.Event
) -> None:
    """Call `on_stored` whenever events were stored, until `stopped` is set (PostgreSQL
    stores only; returns at once on SQLite). Reconnects after any error."""
    if db.dialect != "postgresql":
        return
    while not stopped.is_set():
        try:
            with db.own_connection() as conn:
                try:
                    listener = conn.connection.driver_connection
                    assert listener is not None, "a checked-out connection has its driver's"
                    listener.execute(f"LISTEN {CHANNEL}")
                    on_stored()  # what was stored while not listening
                    while not stopped.is_set():
                        if any(True for _ in listener.notifies(timeout=WAIT_S, stop_after=1)):
                            on_stored()
                finally:
                    conn.invalidate()  # a connection that listens goes back to no pool
        except Exception as exc:
            logger.warning(
                "listening for stored events failed (%s); again in %.0f s", exc, RECONNECT_S
            )
            stopped.wait(RECONNECT_S)
