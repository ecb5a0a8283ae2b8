"""What the records say about opsflow's health, read at scrape time (and for the desk's status
view) by bounded queries.

Every figure is a count, a sum or a minimum computed by the database, over an index where
the set is open-ended: the pending events (the partial index of untriaged events), open
incidents (by state), requests and grants waiting for a decision (by state), the leases held.
Nothing loads the records themselves. The time-to-restore histogram is one aggregate over the
incidents table (a bucket per bound, summed in SQL), one row out however many incidents; so is
the status view's time to restore per day (a column per day, over the index on `resolved_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from sqlalchemy import Connection, and_, case, func, literal, literal_column, select

from opsflow.itsm.records import OPEN_STATES
from opsflow.itsm.store.access import access_grants
from opsflow.itsm.store.db import Database, UtcDateTime
from opsflow.itsm.store.events import event_failures, events
from opsflow.itsm.store.incidents import incidents
from opsflow.itsm.store.leases import RESTORATION_PREFIX, leases
from opsflow.itsm.store.requests import service_requests

RESTORE_BUCKETS_S = (1, 2, 5, 10, 30, 60, 300, 900, 3600, 14400)
"""Upper bounds of the time-to-restore histogram, seconds."""
WAITING_FOR_APPROVAL = {"request": "awaiting-approval", "access": "requested"}
"""Per kind of record, the state in which it waits for an approver's decision."""


@dataclass(frozen=True)
class Waiting:
    """How many records wait in a state, and since when the oldest has."""

    count: int
    oldest: datetime | None


@dataclass(frozen=True)
class RestoreTimes:
    """Time to restore of every restored incident, as a cumulative histogram."""

    buckets: tuple[tuple[float, int], ...]
    """(upper bound, incidents restored within it), for each of RESTORE_BUCKETS_S."""
    count: int
    sum_s: float


@dataclass(frozen=True)
class RestoredDay:
    """The incidents restored on one UTC day, and how long they took to restore."""

    day: date
    count: int
    mean_s: float | None
    """None when nothing was restored that day."""
    longest_s: float | None


@dataclass(frozen=True)
class StatusFigures:
    """What the desk's status view draws: open incidents by priority, and time to restore
    over the last days (oldest day first, today last)."""

    at: datetime
    open_incidents: dict[int, int]
    restored: tuple[RestoredDay, ...]


@dataclass(frozen=True)
class RecordsHealth:
    """The records' side of opsflow's health at one instant (see each query)."""

    at: datetime
    pending: Waiting
    failed_events: int
    open_incidents: dict[int, int]
    sla_breached: dict[tuple[int, str], int]
    restorations_running: int
    approvals: dict[str, Waiting]
    restore_times: RestoreTimes


def records_health(db: Database, now: datetime) -> RecordsHealth:
    """Every figure of `RecordsHealth`, read in one connection."""
    with db.read() as conn:
        return RecordsHealth(
            at=now,
            pending=pending_events(conn),
            failed_events=int(
                conn.execute(select(func.count()).select_from(event_failures)).scalar_one()
            ),
            open_incidents=open_incidents(conn),
            sla_breached=sla_breached(conn, db.dialect, now),
            restorations_running=restorations_running(conn, now),
            approvals={kind: awaiting(conn, kind) for kind in WAITING_FOR_APPROVAL},
            restore_times=restore_times(conn),
        )


def status_figures(db: Database, now: datetime, days: int) -> StatusFigures:
    """Every figure of `StatusFigures`, over the `days` UTC days up to `now`'s, in one
    connection."""
    with db.read() as conn:
        return StatusFigures(
            at=now,
            open_incidents=open_incidents(conn),
            restored=restored_by_day(conn, now, days),
        )


def pending_events(conn: Connection) -> Waiting:
    """Events stored and not triaged yet, and when the oldest of them arrived (the partial
    index of untriaged events holds exactly these)."""
    count, oldest = conn.execute(
        select(func.count(), func.min(events.c.received_at)).where(events.c.triaged_at.is_(None))
    ).one()
    return Waiting(int(count), oldest)


def oldest_pending(conn: Connection) -> datetime | None:
    """When the first event still waiting for triage arrived: one row of the partial index
    (events are numbered as they are stored), however long the backlog."""
    query = (
        select(events.c.received_at)
        .where(events.c.triaged_at.is_(None))
        .order_by(events.c.id)
        .limit(1)
    )
    return conn.execute(query).scalar_one_or_none()


def open_incidents(conn: Connection) -> dict[int, int]:
    """Open incidents at each priority, 1 to 5 (zeros included)."""
    query = (
        select(incidents.c.priority, func.count())
        .where(incidents.c.state.in_(OPEN_STATES))
        .group_by(incidents.c.priority)
    )
    counts = dict.fromkeys(range(1, 6), 0)
    for level, count in conn.execute(query):
        counts[int(level)] = int(count)
    return counts


def sla_breached(conn: Connection, dialect: str, now: datetime) -> dict[tuple[int, str], int]:
    """Open incidents past an SLA target now, by (priority, "response" | "resolution"),
    as `Incident.sla_breaches` decides: the response target is missed when the incident was
    answered late or is still unanswered past it; the resolution clock stops while On Hold,
    so its due date moves by the time held (`paused_s`, and the hold running now)."""
    at = literal(now, UtcDateTime)
    responded = func.coalesce(incidents.c.responded_at, at)
    clock_stopped = func.coalesce(incidents.c.hold_started_at, at)
    if dialect == "postgresql":
        held = incidents.c.paused_s * literal_column("interval '1 second'")
        resolution = incidents.c.resolve_due + held < clock_stopped
    else:  # SQLite keeps times as ISO text: compare them as Julian days
        resolution = func.julianday(incidents.c.resolve_due) + incidents.c.paused_s / 86400.0 < (
            func.julianday(clock_stopped)
        )
    counts: dict[tuple[int, str], int] = {}
    for target, missed in (
        ("response", incidents.c.respond_due < responded),
        ("resolution", resolution),
    ):
        query = (
            select(incidents.c.priority, func.count())
            .where(incidents.c.state.in_(OPEN_STATES), missed)
            .group_by(incidents.c.priority)
        )
        for level, count in conn.execute(query):
            counts[(int(level), target)] = int(count)
    return counts


def restorations_running(conn: Connection, now: datetime) -> int:
    """Restorations some worker holds the lease of now (the leases table holds only the
    work in flight)."""
    query = select(func.count()).where(
        leases.c.name.startswith(RESTORATION_PREFIX, autoescape=True),
        leases.c.until > literal(now, UtcDateTime),
    )
    return int(conn.execute(query).scalar_one())


def awaiting(conn: Connection, kind: str) -> Waiting:
    """Service requests ("request") or access grants ("access") waiting for an approver,
    and since when the oldest has (submitted or requested)."""
    table, since = (
        (service_requests, service_requests.c.submitted_at)
        if kind == "request"
        else (access_grants, access_grants.c.requested_at)
    )
    count, oldest = conn.execute(
        select(func.count(), func.min(since)).where(table.c.state == WAITING_FOR_APPROVAL[kind])
    ).one()
    return Waiting(int(count), oldest)


def restore_times(conn: Connection) -> RestoreTimes:
    """The time-to-restore histogram of every restored incident, summed by the database."""
    seconds = incidents.c.time_to_restore_s
    query = select(
        func.count(seconds),
        func.coalesce(func.sum(seconds), 0.0),
        *(
            func.coalesce(func.sum(case((seconds <= bound, 1), else_=0)), 0)
            for bound in RESTORE_BUCKETS_S
        ),
    ).where(seconds.is_not(None))
    count, total, *within = conn.execute(query).one()
    return RestoreTimes(
        buckets=tuple(zip(map(float, RESTORE_BUCKETS_S), map(int, within), strict=True)),
        count=int(count),
        sum_s=float(total),
    )


def restored_by_day(conn: Connection, now: datetime, days: int) -> tuple[RestoredDay, ...]:
    """Per UTC day of the last `days` (today included), the incidents restored that day and
    their mean and longest time to restore: one row summed by the database, read through
    the index on `resolved_at`, however many incidents the records hold."""
    first = datetime.combine(now.astimezone(UTC).date() - timedelta(days=days - 1), time(), UTC)
    bounds = [first + timedelta(days=i) for i in range(days + 1)]
    resolved, seconds = incidents.c.resolved_at, incidents.c.time_to_restore_s
    columns = []
    for start, end in pairwise(bounds):
        on_day = and_(resolved >= literal(start, UtcDateTime), resolved < literal(end, UtcDateTime))
        columns += [
            func.coalesce(func.sum(case((on_day, 1), else_=0)), 0),
            func.sum(case((on_day, seconds))),
            func.max(case((on_day, seconds))),
        ]
    query = select(*columns).where(
        seconds.is_not(None),
        resolved >= literal(bounds[0], UtcDateTime),
        resolved < literal(bounds[-1], UtcDateTime),
    )
    row = conn.execute(query).one()
    restored = []
    for i, start in enumerate(bounds[:-1]):
        count, total, longest = row[3 * i : 3 * i + 3]
        restored.append(
            RestoredDay(
                day=start.date(),
                count=int(count),
                mean_s=float(total) / int(count) if count else None,
                longest_s=float(longest) if count else None,
            )
        )
    return tuple(restored)
