"""Failed runs paged at once or held for one digest: on each backend, across connections."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from opsflow.itsm.store.records import Records

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_the_first_failure_pages_and_the_next_ones_wait_for_the_window_end(store: Records) -> None:
    pages = store.paging
    first = pages.record("ops", "run-1", {"name": "a"}, WINDOW, "pager-1", 60, now=at(0))
    assert (first.outcome, first.failure.window_end, first.leftovers) == ("page", at(5), [])
    pages.mark_sent([first.failure.id], "pager-1", at(0))
    second = pages.record("ops", "run-2", {"name": "b"}, WINDOW, "pager-2", 60, now=at(1))
    third = pages.record("ops", "run-3", {"name": "c"}, WINDOW, "pager-3", 60, now=at(4.9))
    assert (second.outcome, third.outcome) == ("held", "held")
    assert second.failure.window_end == at(5)
    other_team = pages.record("db", "run-4", {}, WINDOW, "pager-4", 60, now=at(1))
    assert other_team.outcome == "page"  # windows are per team
    again = pages.record("ops", "run-2", {"name": "b"}, WINDOW, "pager-5", 60, now=at(2))
    assert again.outcome == "repeat" and again.failure.id == second.failure.id

    assert pages.claim_due("ops", "pager-1", 60, now=at(4.99)) == []  # the window is open
    due = pages.claim_due("ops", "pager-1", 60, now=at(5))
    assert [f.flow_run_id for f in due] == ["run-2", "run-3"]
    assert due[0].run == {"name": "b"}
    assert pages.claim_due("ops", "pager-9", 60, now=at(5.5)) == []  # claimed by pager-1
    pages.mark_sent([f.id for f in due], "pager-1", at(5))
    assert pages.claim_due("ops", "pager-9", 60, now=at(30)) == []
    assert [f.flow_run_id for f in pages.unsent("ops")] == []

    after = pages.record("ops", "run-5", {}, WINDOW, "pager-6", 60, now=at(5.1))
    assert after.outcome == "page" and after.failure.window_end == at(10.1)


def test_what_a_dead_sender_held_goes_with_the_next_failure_after_the_window(
    store: Records,
) -> None:
    pages = store.paging
    opened = pages.record("ops", "run-1", {}, WINDOW, "dead", 60, now=at(0))
    pages.mark_sent([opened.failure.id], "dead", at(0))
    pages.record("ops", "run-2", {}, WINDOW, "pager-2", 60, now=at(1))
    pages.record("ops", "run-3", {}, WINDOW, "pager-3", 60, now=at(2))
    # The opener died before its window ended: the next failure takes what it held.
    nxt = pages.record("ops", "run-4", {}, WINDOW, "pager-4", 60, now=at(7))
    assert nxt.outcome == "page"
    assert [f.flow_run_id for f in nxt.leftovers] == ["run-2", "run-3"]
    # It could not page them: given back, they are the digest of its own window.
    pages.release([f.id for f in nxt.leftovers], "pager-4")
    pages.mark_sent([nxt.failure.id], "pager-4", at(7))
    due = pages.claim_due("ops", "pager-4", 60, now=at(12))
    assert [f.flow_run_id for f in due] == ["run-2", "run-3"]
    # A sender that dies after claiming loses its claim when it lapses, not the failures.
    assert pages.claim_due("ops", "pager-5", 60, now=at(12.5)) == []
    lapsed = pages.claim_due("ops", "pager-5", 60, now=at(13))
    assert [f.flow_run_id for f in lapsed] == ["run-2", "run-3"]
    pages.mark_sent([f.id for f in due], "pager-4", at(13))  # no longer its claim: no effect
    assert [f.flow_run_id for f in pages.unsent("ops")] == ["run-2", "run-3"]
    pages.mark_sent([f.id for f in lapsed], "pager-5", at(13))
    assert pages.unsent("ops") == []


def test_of_failures_recorded_at_once_from_separate_stores_exactly_one_pages(
    records_url: str,
) -> None:
    stores = [Records(records_url) for _ in range(4)]  # separate engines, as processes have
    try:

        def record(n: int) -> str:
            pages = stores[n % len(stores)].paging
            return pages.record("ops", f"run-{n}", {}, WINDOW, f"pager-{n}", 60).outcome

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(record, range(24)))
        assert sorted(outcomes) == ["held"] * 23 + ["page"]
        assert len(stores[0].paging.unsent("ops")) == 24
    finally:
        for records in stores:
            records.db.dispose()
