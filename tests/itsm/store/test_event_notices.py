"""Workers hear of stored events from PostgreSQL itself: a notice per commit that stored some,
none for a commit of duplicates alone, and the listener comes back after its connection is
killed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from opsflow.itsm.records import EventIn
from opsflow.itsm.store.event_notices import CHANNEL, listen_for_stored_events
from opsflow.itsm.store.records import Records

WAIT_S = 10.0
"""Generous: a notice normally arrives in milliseconds; this only bounds a failing test."""


def alert(fingerprint: str) -> EventIn:
    return EventIn.model_validate(
        {
            "source": "alertmanager",
            "fingerprint": fingerprint,
            "status": "firing",
            "host": "web01",
            "service": "nginx",
            "labels": {"alertname": "ServiceDown"},
            "summary": "nginx down",
            "occurred_at": datetime(2026, 12, 1, tzinfo=UTC),
        }
    )


class Heard:
    """Counts the listener's calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self.changed = threading.Condition()

    def __call__(self) -> None:
        with self.changed:
            self.calls += 1
            self.changed.notify_all()

    def wait_beyond(self, calls: int, timeout_s: float = WAIT_S) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.calls > calls, timeout_s)


@pytest.fixture
def writer_store(records_url: str) -> Iterator[Records]:
    """The store the test writes events through, as a desk would."""
    store = Records(records_url)
    yield store
    store.db.dispose()


@pytest.fixture
def listening(records_url: str) -> Iterator[Heard]:
    """A listener on its own store, heard once it listens; the test writes through another."""
    listener_store = Records(records_url)
    heard = Heard()
    stopped = threading.Event()
    thread = threading.Thread(
        target=listen_for_stored_events, args=(listener_store.db, heard, stopped), daemon=True
    )
    thread.start()
    assert heard.wait_beyond(0), "the listener never started listening"
    yield heard
    stopped.set()
    thread.join(5)
    listener_store.db.dispose()


ON_POSTGRESQL = pytest.mark.parametrize("records_url", ["postgresql"], indirect=True)
"""PostgreSQL alone notifies: these tests' records are there."""


@ON_POSTGRESQL
def test_a_commit_that_stores_events_is_heard_once(writer_store: Records, listening: Heard) -> None:
    heard = listening
    before = heard.calls
    assert writer_store.events.store([alert("a"), alert("b")], datetime.now(UTC)) == (2, 0)
    assert heard.wait_beyond(before), "no notice after events were stored"
    assert heard.calls == before + 1, "one commit, one notice"


@ON_POSTGRESQL
def test_a_commit_of_duplicates_alone_sends_no_notice(writer_store: Records) -> None:
    """Notices arrive in commit order: every notice sent before the test's own `fence` was
    heard once the fence is, so what came before it is all the writes announced."""
    with writer_store.db.own_connection() as conn:
        listener = conn.connection.driver_connection
        assert listener is not None
        listener.execute(f"LISTEN {CHANNEL}")
        assert writer_store.events.store([alert("a")], datetime.now(UTC)) == (1, 0)
        assert writer_store.events.store([alert("a")], datetime.now(UTC)) == (0, 1)
        listener.execute(f"NOTIFY {CHANNEL}, 'fence'")
        payloads = []
        for notice in listener.notifies(timeout=WAIT_S):
            payloads.append(notice.payload)
            if notice.payload == "fence":
                break
        conn.invalidate()
    assert payloads == ["", "fence"], "the duplicate's commit was announced (or the new one not)"


@ON_POSTGRESQL
def test_the_listener_listens_again_after_its_connection_is_killed(
    writer_store: Records, listening: Heard
) -> None:
    heard = listening
    with writer_store.db.read() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN %' AND datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert killed == 1
    # Back on a new connection, it first calls once for what it may have missed.
    assert heard.wait_beyond(heard.calls, timeout_s=WAIT_S)
    before = heard.calls
    writer_store.events.store([alert("c")], datetime.now(UTC))
    assert heard.wait_beyond(before), "no notice after the listener reconnected"


def test_sqlite_has_no_listener(tmp_path) -> None:
    store = Records(f"sqlite:///{tmp_path / 'records.db'}")
    heard = Heard()
    listen_for_stored_events(store.db, heard, threading.Event())  # returns at once
    assert heard.calls == 0
