"""Named leases in real stores (SQLite and PostgreSQL): exclusive, renewable, and taken over
once lapsed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from opsflow.itsm.store.leases import Leases
from opsflow.itsm.store.records import Records

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def leases(records_url: str) -> Leases:
    return Records(records_url).leases


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_account_locks_are_exclusive_leases(leases: Leases) -> None:
    assert leases.take("user:carol", "run-a", T0, lease_s=60)
    assert leases.take("user:carol", "run-a", T0, lease_s=60), "re-entrant for its holder"
    assert not leases.take("user:carol", "run-b", at(59), lease_s=60)
    assert leases.take("user:bob", "run-b", T0, lease_s=60), "one lock per account"
    leases.release("user:carol", "run-b")  # not the holder: nothing happens
    assert not leases.take("user:carol", "run-b", T0, lease_s=60)
    leases.release("user:carol", "run-a")
    assert leases.take("user:carol", "run-b", T0, lease_s=60)
    assert leases.take("user:carol", "run-c", at(61), lease_s=60), "a dead holder's lease runs out"


def test_a_lease_is_held_while_renewed_and_listed_once_it_lapses(leases: Leases) -> None:
    assert leases.take("request:1", "desk-a", T0, lease_s=30)
    assert leases.take("request:2", "desk-a", T0, lease_s=30)
    assert leases.take("user:carol", "run-a", T0, lease_s=1)
    assert leases.lapsed("request:", at(29)) == []
    leases.renew("desk-a", ["request:1"], at(60))
    leases.renew("desk-b", ["request:2"], at(60))  # not desk-b's: nothing happens
    assert leases.lapsed("request:", at(31)) == [("request:2", "desk-a")], (
        "only the named prefix, only what lapsed"
    )
    assert leases.lapsed("request:", at(61)) == [
        ("request:1", "desk-a"),
        ("request:2", "desk-a"),
    ]
    assert leases.take("request:1", "desk-b", at(61), lease_s=30), "taken over once lapsed"
    leases.release("request:1", "desk-a")  # desk-a's late release takes nothing from desk-b
    assert not leases.take("request:1", "desk-a", at(62), lease_s=30)


def test_prefix_is_matched_literally(leases: Leases) -> None:
    assert leases.take("request_1", "desk-a", T0, lease_s=1)
    assert leases.take("request:1", "desk-a", T0, lease_s=1)
    assert leases.lapsed("request_", at(2)) == [("request_1", "desk-a")], "_ is no wildcard"


def test_racing_takers_and_releasers_never_fail_and_never_share_a_lease(leases: Leases) -> None:
    """On PostgreSQL the row a taker's insert found can be deleted by a release before the
    taker reads it; the taker must then try again, not fail."""
    errors: list[BaseException] = []
    overlaps: list[str] = []
    holding: set[str] = set()
    guard = threading.Lock()

    def contend(holder: str) -> None:
        try:
            for _ in range(40):
                if leases.take("user:carol", holder, T0, lease_s=60):
                    with guard:
                        if holding:
                            overlaps.append(holder)
                        holding.add(holder)
                    with guard:
                        holding.discard(holder)
                    leases.release("user:carol", holder)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"run-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert overlaps == []
