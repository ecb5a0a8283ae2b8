"""The dispatcher turns bursts of 'events stored' into few triage runs and launches restorations."""

from __future__ import annotations

import threading
import time

from desk.dispatch import Dispatcher
from tests.support import wait_for


def test_a_burst_coalesces_and_opened_incidents_are_restored() -> None:
    pending = {"events": 0}
    runs: list[int] = []
    restored: list[str] = []
    lock = threading.Lock()

    def triage() -> list[dict]:
        with lock:
            taken, pending["events"] = pending["events"], 0
        runs.append(taken)
        time.sleep(0.05)
        if not taken:
            return []
        return [
            {"action": "opened", "runbook": "restart-service", "incident_number": "INC1"},
            *({"action": "correlated", "runbook": None} for _ in range(taken - 1)),
        ]

    def restore(number: str) -> None:
        restored.append(number)
        raise RuntimeError("a failing restoration is logged, not fatal")

    dispatcher = Dispatcher(triage, restore)
    dispatcher.start()
    for _ in range(500):
        with lock:
            pending["events"] += 1
        dispatcher.notify()
    wait_for(lambda: sum(runs) == 500 and dispatcher.running_restorations() == 0, 10, "triage")
    dispatcher.stop()
    assert len(runs) < 50, f"{len(runs)} triage runs for one burst"
    assert restored and set(restored) == {"INC1"}
