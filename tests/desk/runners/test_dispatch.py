"""The dispatcher turns bursts of 'events stored' into few triage passes, backing off on failure."""

from __future__ import annotations

import threading
import time

from opsflow.desk.runners.dispatch import Dispatcher
from tests.support.factories import auth
from tests.support.waiting import wait_for


def test_a_burst_coalesces_into_few_passes() -> None:
    pending = {"events": 0}
    runs: list[int] = []
    lock = threading.Lock()

    def triage() -> bool:
        with lock:
            taken, pending["events"] = pending["events"], 0
        runs.append(taken)
        time.sleep(0.05)
        return bool(taken)

    dispatcher = Dispatcher(triage)
    dispatcher.start()
    for _ in range(500):
        with lock:
            pending["events"] += 1
        dispatcher.notify()
    wait_for(lambda: sum(runs) == 500, 10, "triage")
    dispatcher.stop()
    assert len(runs) < 50, f"{len(runs)} triage runs for one burst"


def test_in_a_storm_passes_take_at_most_their_share_of_the_time() -> None:
    def counting(max_duty: float) -> tuple[Dispatcher, list[int]]:
        passes: list[int] = []

        def busy_pass() -> bool:
            passes.append(len(passes))
            time.sleep(0.05)
            return True  # a storm: there is always more

        return Dispatcher(busy_pass, min_interval_s=0.01, max_duty=max_duty), passes

    full, full_passes = counting(1.0)
    quarter, quarter_passes = counting(0.25)
    quarter.start()
    full.start()
    wait_for(lambda: len(full_passes) >= 12, 10, "twelve passes at full duty")
    quarter.stop()
    full.stop()
    # At a quarter of the time, each pass rests three times its length: a quarter as many.
    assert 1 <= len(quarter_passes) <= len(full_passes) // 2, (quarter_passes, full_passes)


def test_after_a_quiet_spell_a_pass_starts_at_once() -> None:
    passes: list[int] = []

    def short_pass() -> bool:
        passes.append(len(passes))
        time.sleep(0.05)
        return False  # nothing more pending: no rest owed

    # Were rest owed after a pass that found nothing, it would be 0.05 x 999 s.
    dispatcher = Dispatcher(short_pass, min_interval_s=0.01, max_duty=0.001)
    dispatcher.start()
    try:
        wait_for(lambda: len(passes) == 1, 10, "the first pass")
        dispatcher.notify()
        wait_for(lambda: len(passes) == 2, 10, "the second pass, at once")
    finally:
        dispatcher.stop()


def test_a_failing_triage_backs_off_and_says_so() -> None:
    calls: list[int] = []

    def triage() -> bool:
        calls.append(len(calls))
        raise RuntimeError("database is on fire")

    dispatcher = Dispatcher(triage, backoff_s=(0.01, 0.04))
    dispatcher.start()
    try:
        wait_for(lambda: len(calls) >= 5, 10, "five triage attempts")
        status = dispatcher.status()
    finally:
        dispatcher.stop()
    assert status.failing and status.consecutive_failures >= 5
    assert status.retry_in_s == 0.04, "the back-off doubles up to its longest"
    assert status.last_error == "RuntimeError: database is on fire"


def test_new_events_do_not_shorten_a_back_off() -> None:
    calls: list[int] = []
    dispatcher: Dispatcher

    def triage() -> bool:
        calls.append(len(calls))
        for _ in range(100):
            dispatcher.notify()  # events arriving while the pass fails
        raise RuntimeError("database is on fire")

    dispatcher = Dispatcher(triage, backoff_s=(0.2, 0.2), min_interval_s=0.0)
    dispatcher.start()
    try:
        # Polled every 0.05 s: the third attempt is seen before a fourth is due, where
        # notified retries without a back-off would have made hundreds.
        seen = wait_for(lambda: len(calls) >= 3 and len(calls), 10, "three triage attempts")
    finally:
        dispatcher.stop()
    assert seen <= 4, f"{seen} attempts: a notified retry came before its back-off"


def test_health_is_degraded_while_triage_fails_or_lags(store, desk_estate) -> None:
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient

    from opsflow.desk.app import create_app
    from opsflow.desk.estate import EstateCache
    from opsflow.itsm.records import EventIn

    def broken() -> bool:
        raise RuntimeError("boom")

    failing = Dispatcher(broken)
    app = create_app(store, EstateCache(desk_estate))
    client = TestClient(app)
    assert client.get("/api/v1/health").json()["status"] == "ok"

    app.state.dispatcher = failing
    failing.start()
    try:
        wait_for(lambda: failing.status().failing, 10, "triage to fail")
        anonymous = client.get("/api/v1/health").json()
        health = client.get("/api/v1/health", headers=auth("olga")).json()
    finally:
        failing.stop()
    assert (anonymous["status"], anonymous["triage"]["failing"]) == ("degraded", True)
    assert "last_error" not in anonymous["triage"] and "boom" not in str(anonymous)
    assert health["status"] == "degraded"
    assert health["triage"]["last_error"] == "RuntimeError: boom"

    del app.state.dispatcher
    old = datetime.now(UTC) - timedelta(minutes=5)
    event = EventIn(
        source="t", fingerprint="f", status="firing", host="web1", occurred_at=old, labels={}
    )
    store.events.store([event], old)
    lagging = client.get("/api/v1/health").json()
    assert lagging["status"] == "degraded"
    assert lagging["triage"]["pending_events"] == 1
    assert lagging["triage"]["oldest_pending_age_s"] >= 299
    assert "opsflow_triage_oldest_pending_seconds 3" in client.get("/metrics").text
