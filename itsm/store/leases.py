"""Named leases in the records store: who holds something, until when, across processes.

A lease is taken when it is free, lapsed or already the taker's; its holder renews it while
it works and releases it at the end. A holder that dies simply stops renewing, and once the
lease lapses anyone may take it over. Access grants lease accounts (`user:NAME`) so two runs
never change one account at once; workers lease the requests (`request:ID`) and the grants
waiting for a change on hosts (`grant:ID`) they carry, and a restoration leases its incident
(`restoration:ID`) in the transaction that claims it (`take_lease`), so one restoration at a
time acts on an incident. Work recorded with no lease waits for a worker to lease it: the
workers' sweeps take up whatever waited longer than a lease, so no crash leaves it carried
by nobody. A request submitted from the Prefect UI is recorded with its run's lease in one
transaction (`LeaseClaim`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Select,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from opsflow.errors import TransientError
from opsflow.itsm.records import Incident
from opsflow.itsm.store.db import Database, UtcDateTime, metadata
from opsflow.itsm.store.incidents import Incidents, incidents

RESTORATION_PREFIX = "restoration:"

logger = logging.getLogger("opsflow.itsm.store.leases")

leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("until", UtcDateTime, nullable=False),
)


class LeaseHeldError(TransientError):
    """A lease a record's transaction needed is held by another holder: nothing was written."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lease {name} is held by another process; nothing was recorded")
        self.name = name


@dataclass(frozen=True)
class LeaseClaim:
    """A lease to take in the transaction that writes a record: `prefix` + the record's id."""

    prefix: str
    holder: str
    lease_s: float

    def take(self, conn: Connection, record_id: int, now: datetime) -> str:
        """Take the record's lease in `conn`'s transaction; its name.

        Raises:
            LeaseHeldError: someone else holds it, so the transaction must not commit.
        """
        name = f"{self.prefix}{record_id}"
        if not take_lease(conn, name, self.holder, now, self.lease_s):
            raise LeaseHeldError(name)
        return name


def take_lease(conn: Connection, name: str, holder: str, now: datetime, lease_s: float) -> bool:
    """In `conn`'s transaction, hold `name` for `lease_s` if free, lapsed or `holder`'s already.

    The insert does nothing on a conflict, so two takers racing for a new lease never fail
    their transaction: the loser reads the winner's row (locked on PostgreSQL) and is refused.
    On PostgreSQL a release may delete that row between the insert and the read: then the
    lease is free and the insert is tried again.
    """
    until = now + timedelta(seconds=lease_s)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert_lease = (
        dialect.insert(leases)
        .values(name=name, holder=holder, until=until)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    query = select(leases).where(leases.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = None
    while row is None:
        if conn.execute(insert_lease).rowcount == 1:
            return True
        row = conn.execute(query).one_or_none()
    if row.holder != holder and row.until > now:
        return False
    conn.execute(update(leases).where(leases.c.name == name).values(holder=holder, until=until))
    return True


class Leases:
    """The leases kept in `db`; restorations claim `incidents` with them."""

    def __init__(self, db: Database, incidents: Incidents) -> None:
        self.db = db
        self._incidents = incidents

    def take(self, name: str, holder: str, now: datetime, lease_s: float) -> bool:
        """Hold `name` for `lease_s` from `now` if it is free, lapsed or `holder`'s already."""
        with self.db.write() as conn:
            return take_lease(conn, name, holder, now, lease_s)

    def renew(self, holder: str, names: Sequence[str], until: datetime) -> set[str]:
        """Move the end of `holder`'s leases on `names` to `until` (now, to let them lapse);
        the names `holder` still holds. A lease missing from the answer lapsed and was taken
        over, or given back: whoever renewed it must stop acting on what it covers."""
        if not names:
            return set()
        mine = (leases.c.holder == holder) & leases.c.name.in_(list(names))
        with self.db.write() as conn:
            conn.execute(update(leases).where(mine).values(until=until))
            return set(conn.execute(select(leases.c.name).where(mine)).scalars())

    def release(self, name: str, holder: str) -> None:
        """Give the lease back, if `holder` still has it."""
        with self.db.write() as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    def lapsed(self, prefix: str, now: datetime) -> list[tuple[str, str]]:
        """(name, holder) of the leases named `prefix…` whose holder stopped renewing them."""
        query = (
            select(leases.c.name, leases.c.holder)
            .where(leases.c.name.startswith(prefix, autoescape=True), leases.c.until <= now)
            .order_by(leases.c.name)
        )
        with self.db.read() as conn:
            return [(row.name, row.holder) for row in conn.execute(query)]

    def holder(self, name: str, now: datetime) -> str | None:
        """Who holds `name` now, if anyone does (a lapsed lease is held by nobody)."""
        query = select(leases.c.holder).where(leases.c.name == name, leases.c.until > now)
        with self.db.read() as conn:
            return conn.execute(query).scalar_one_or_none()

    def holds(self, name: str, holder: str, lease_s: float) -> bool:
        """Renew `holder`'s lease on `name` for `lease_s`; whether `holder` still holds it.

        Ask before acting on what the lease covers: a holder that stalled longer than the
        lease (a database outage, a long wait) may have lost it to another.
        """
        until = datetime.now(UTC) + timedelta(seconds=lease_s)
        return name in self.renew(holder, [name], until)

    @contextmanager
    def renewing(self, name: str, holder: str, lease_s: float) -> Iterator[None]:
        """Renew `holder`'s lease on `name` from a thread while the block runs (every third
        of `lease_s`, at most 5 s); the lease is left as it is afterwards. Once the lease is
        found lost the renewals stop with a warning; the block learns it through `holds`."""
        stopped = threading.Event()

        def keep() -> None:
            while not stopped.wait(min(lease_s / 3, 5.0)):
                try:
                    if not self.holds(name, holder, lease_s):
                        logger.warning("lease %s is no longer %s's: not renewing it", name, holder)
                        return
                except Exception:
                    logger.warning("renewing lease %s failed; trying again", name, exc_info=True)

        thread = threading.Thread(target=keep, name=f"lease-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stopped.set()
            thread.join()

    # -- restorations ---------------------------------------------------------------------

    def claim_restoration(
        self,
        incident: int | str,
        holder: str,
        lease_s: float,
        actor: str,
        flow_run_id: str | None = None,
        now: datetime | None = None,
    ) -> RestorationClaim:
        """Claim an incident for a restoration and lease it to `holder`, in one transaction.

        The claim (In Progress if New, the run linked) happens only when the incident is left
        to automation (New or In Progress, not escalated to a person) and its restoration
        lease is free, lapsed or `holder`'s already.
        """
        now = now or datetime.now(UTC)

        def hold(conn: Connection, record: Incident) -> bool:
            return take_lease(conn, restoration_lease(record.id), holder, now, lease_s)

        record, claimed = self._incidents.claim(incident, actor, now, flow_run_id, hold)
        current = holder if claimed else self.holder(restoration_lease(record.id), now)
        return RestorationClaim(record, claimed, current)

    def unclaimed_restorations(self, opened_before: datetime) -> list[str]:
        """Restoration lease names of the incidents opened with a runbook before
        `opened_before` that are still New, assigned to nobody and leased by no restoration."""
        query = unleased(
            incidents,
            RESTORATION_PREFIX,
            incidents.c.state == "New",
            incidents.c.assigned_to.is_(None),
            incidents.c.runbook.is_not(None),
            incidents.c.opened_at < opened_before,
        )
        with self.db.read() as conn:
            return [restoration_lease(incident_id) for incident_id in conn.execute(query).scalars()]


def unleased(table: Table, prefix: str, *waiting: ColumnElement[bool]) -> Select[Any]:
    """The ids of `table`'s records that are `waiting` and that no lease `prefix` + id
    covers (nobody carries them), oldest first."""
    lease_name = prefix + table.c.id.cast(String)
    return (
        select(table.c.id)
        .outerjoin(leases, leases.c.name == lease_name)
        .where(*waiting, leases.c.name.is_(None))
        .order_by(table.c.id)
    )


@dataclass(frozen=True)
class RestorationClaim:
    """An incident as a restoration found it, whether it claimed it, and who holds its lease."""

    incident: Incident
    claimed: bool
    holder: str | None


def restoration_lease(incident_id: int) -> str:
    """The name of the lease a restoration of the incident holds."""
    return f"{RESTORATION_PREFIX}{incident_id}"


def incident_of(lease_name: str) -> int:
    """The incident id a restoration lease is named after."""
    return int(lease_name.removeprefix(RESTORATION_PREFIX))
