"""Failed runs held for one digest page, so a storm of failures is two pages, not forty.

The first failure paging a team opens a grouping window; the failures recorded within it are
held here and sent as one digest when it ends: by the run that opened it, or, if that run
died, by the next one to page the team. Each failure is one row, claimed by one sender at a
time (a claim lapses, so a sender that dies mid-send leaves it to the next) and marked sent
once its page went out: no failure is dropped, none is in two pages unless a sender died
between sending and marking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Index,
    String,
    Table,
    UniqueConstraint,
    func,
    insert,
    or_,
    select,
    update,
)

from opsflow.itsm.store.db import CHUNK, Database, Id, Json, UtcDateTime, metadata, take_turns

failed_run_pages = Table(
    "failed_run_pages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("team", String(255), nullable=False),
    Column("flow_run_id", String(64), nullable=False),
    Column("run", Json, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("window_end", UtcDateTime, nullable=False),
    Column("opened_window", Boolean, nullable=False),
    Column("claimed_by", String(255)),
    Column("claimed_until", UtcDateTime),
    Column("sent_at", UtcDateTime),
    UniqueConstraint("team", "flow_run_id", name="uq_failed_run_pages_team_run"),
    sqlite_autoincrement=True,
)
Index("ix_failed_run_pages_team_sent", failed_run_pages.c.team, failed_run_pages.c.sent_at)


@dataclass(frozen=True)
class HeldFailure:
    """A failed run recorded for a page: its row, the run as the page names it, its window."""

    id: int
    flow_run_id: str
    run: dict[str, Any]
    window_end: datetime


@dataclass(frozen=True)
class PageDecision:
    """What recording a failure decided.

    Attributes:
        outcome: `page` (it opened a window: page now, then send the digest at its end),
            `held` (a window is open: it waits for that digest) or `repeat` (this failure
            was recorded before: nothing to do).
        failure: the failure's row (for `repeat`, as first recorded).
        leftovers: failures held in windows that ended unsent (their sender died), now
            claimed by the caller to send before its own page.
    """

    outcome: Literal["page", "held", "repeat"]
    failure: HeldFailure
    leftovers: list[HeldFailure]


class FailedRunPages:
    """The failed runs paged or held for a digest, kept in `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        team: str,
        flow_run_id: str,
        run: dict[str, Any],
        window: timedelta,
        holder: str,
        claim_s: float,
        now: datetime | None = None,
    ) -> PageDecision:
        """Record that `flow_run_id` failed, for `team`'s on-call, and decide whether it pages.

        Within an open window of the team it is held; otherwise it opens one of `window`
        (claimed by `holder` for `claim_s`, to page now) and takes the leftovers with it.
        One transaction per team at a time decides, so of failures recorded at once exactly
        one opens the window. `now` (default: the clock once the team's turn came) is for tests.
        """
        table = failed_run_pages
        with self.db.write() as conn:
            take_turns(conn, f"failed-run-pages:{team}")
            now = now or datetime.now(UTC)
            first = conn.execute(
                select(table).where(table.c.team == team, table.c.flow_run_id == flow_run_id)
            ).first()
            if first is not None:
                return PageDecision("repeat", _failure(first), [])
            window_end = conn.execute(
                select(func.max(table.c.window_end)).where(table.c.team == team)
            ).scalar_one_or_none()
            held = window_end is not None and window_end > now
            leftovers = [] if held else _claim(conn, team, holder, claim_s, now)
            row: dict[str, Any] = {
                "team": team,
                "flow_run_id": flow_run_id,
                "run": run,
                "recorded_at": now,
                "window_end": window_end if held else now + window,
                "opened_window": not held,
                "claimed_by": None if held else holder,
                "claimed_until": None if held else now + timedelta(seconds=claim_s),
            }
            key = conn.execute(insert(table).values(row)).inserted_primary_key
        assert key is not None, "an insert of one row has its primary key"
        failure = HeldFailure(key[0], flow_run_id, run, row["window_end"])
        return PageDecision("held" if held else "page", failure, leftovers)

    def claim_due(
        self, team: str, holder: str, claim_s: float, now: datetime | None = None
    ) -> list[HeldFailure]:
        """Claim for `holder` every unsent failure of `team` whose window has ended and that
        no other sender holds: what the digest at a window's end sends, oldest first."""
        with self.db.write() as conn:
            take_turns(conn, f"failed-run-pages:{team}")
            return _claim(conn, team, holder, claim_s, now or datetime.now(UTC))

    def mark_sent(self, ids: Sequence[int], holder: str, at: datetime) -> None:
        """Mark the failures `holder` claimed as paged: they are never sent again."""
        with self.db.write() as conn:
            for held in _held_by(ids, holder):
                conn.execute(update(failed_run_pages).where(held).values(sent_at=at))

    def release(self, ids: Sequence[int], holder: str) -> None:
        """Give back `holder`'s claims on failures it could not page, for the next sender."""
        with self.db.write() as conn:
            for held in _held_by(ids, holder):
                conn.execute(
                    update(failed_run_pages).where(held).values(claimed_by=None, claimed_until=None)
                )

    def unsent(self, team: str) -> list[HeldFailure]:
        """The failures of `team` no page has carried yet, oldest first."""
        table = failed_run_pages
        query = (
            select(table)
            .where(table.c.team == team, table.c.sent_at.is_(None))
            .order_by(table.c.id)
        )
        with self.db.read() as conn:
            return [_failure(row) for row in conn.execute(query)]


def _claim(
    conn: Connection, team: str, holder: str, claim_s: float, now: datetime
) -> list[HeldFailure]:
    """In `conn`'s transaction, claim `team`'s unsent failures whose window ended by `now`."""
    table = failed_run_pages
    due = (
        select(table)
        .where(
            table.c.team == team,
            table.c.sent_at.is_(None),
            table.c.window_end <= now,
            or_(table.c.claimed_until.is_(None), table.c.claimed_until <= now),
        )
        .order_by(table.c.id)
    )
    found = [_failure(row) for row in conn.execute(due)]
    until = now + timedelta(seconds=claim_s)
    for start in range(0, len(found), CHUNK):
        ids = [f.id for f in found[start : start + CHUNK]]
        conn.execute(
            update(table).where(table.c.id.in_(ids)).values(claimed_by=holder, claimed_until=until)
        )
    return found


def _held_by(ids: Sequence[int], holder: str) -> list[ColumnElement[bool]]:
    """The rows `ids` while `holder` claims them, as conditions of at most CHUNK ids each."""
    table = failed_run_pages
    return [
        table.c.id.in_(list(ids[start : start + CHUNK])) & (table.c.claimed_by == holder)
        for start in range(0, len(ids), CHUNK)
    ]


def _failure(row: Any) -> HeldFailure:
    return HeldFailure(row.id, row.flow_run_id, row.run, row.window_end)
