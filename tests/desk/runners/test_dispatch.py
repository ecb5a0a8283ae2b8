"""The dispatcher turns bursts of 'events stored' into few triage passes, backing off on failure."""

from __future__ import annotations

import itertools
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
    spans: list[tuple[float, float]] = []

    def long_pass() -> bool:
        started = time.monotonic()
        time.sleep(0.2)
        spans.append((started, time.monotonic()))
        return True  # a storm: there is always more

    dispatcher = Dispatcher(long_pass, min_interval_s=0.01, max_duty=0.4)
    dispatcher.start()
    wait_for(lambda: len(spans) >= 4, 10, "four passes")
    dispatcher.stop()
    rests = [later[0] - earlier[1] for earlier, later in itertools.pairwise(spans)]
    # 0.2 s busy at 40 % leaves 0.3 s of rest before the next pass.
    assert all(rest >= 0.29 for rest in rests), rests


def test_after_a_quiet_spell_a_pass_starts_at_once() -> None:
    starts: list[float] = []

    def short_pass() -> bool:
        starts.append(time.monotonic())
        time.sleep(0.2)
        return False  # nothing more pending: no rest owed

    dispatcher = Dispatcher(short_pass, min_interval_s=0.01, max_duty=0.1)
    dispatcher.start()
    wait_for(lambda: len(starts) == 1, 10, "the first pass")
    time.sleep(0.3)
    notified = time.monotonic()
    dispatcher.notify()
    wait_for(lambda: len(starts) == 2, 10, "the second pass")
    dispatcher.stop()
    assert starts[1] - notified < 0.1


def test_a_failing_triage_backs_off_and_says_so() -> None:
    calls: list[float] = []

    def triage() -> bool:
        calls.append(time.monotonic())
        raise RuntimeError("database is on fire")

    dispatcher = Dispatcher(triage, backoff_s=(0.1, 0.4))
    dispatcher.start()
    try:
        for _ in range(100):
            dispatcher.notify()  # new events do not shorten the back-off
        wait_for(lambda: len(calls) >= 5, 10, "five triage attempts")
        status = dispatcher.status()
    finally:
        dispatcher.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)][:4]
    assert all(gap >= 0.9 * want for gap, want in zip(gaps, (0.1, 0.2, 0.4, 0.4), strict=True))
    assert status.failing and status.consecutive_failures >= 5
    assert status.last_error == "RuntimeError: database is on fire"


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
