"""Named leases in the records store: who holds something, until when, across processes.

A lease is taken when it is free, lapsed or already the taker's; its holder renews it while
it works and releases it at the end. A holder that dies simply stops renewing, and once the
lease lapses anyone may take it over. Access grants lease accounts (`user:NAME`) so two runs
never change one account at once; desks lease the requests (`request:ID`) and approved
grants (`grant:ID`) they carry. Those two leases are taken by the record store in the very
transaction that records the request or the approval (`LeaseClaim`, `take_lease`), so no
crash can leave such a record committed with nobody carrying it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from itsm.store import Store, UtcDateTime, metadata
from opsflow.errors import TransientError

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
    """In `conn`'s transaction, hold `name` for `lease_s` if free, lapsed or `holder`'s already."""
    until = now + timedelta(seconds=lease_s)
    query = select(leases).where(leases.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        conn.execute(insert(leases).values(name=name, holder=holder, until=until))
        return True
    if row.holder != holder and row.until > now:
        return False
    conn.execute(update(leases).where(leases.c.name == name).values(holder=holder, until=until))
    return True


class Leases:
    """The leases kept in `store`'s database (the table is created on first use)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_tables(leases)

    def take(self, name: str, holder: str, now: datetime, lease_s: float) -> bool:
        """Hold `name` for `lease_s` from `now` if it is free, lapsed or `holder`'s already."""
        try:
            with self.store.write() as conn:
                return take_lease(conn, name, holder, now, lease_s)
        except IntegrityError:  # another holder inserted it first (PostgreSQL)
            return False

    def renew(self, holder: str, names: Sequence[str], until: datetime) -> None:
        """Move the end of `holder`'s leases on `names` to `until` (now, to let them lapse)."""
        if not names:
            return
        with self.store.write() as conn:
            conn.execute(
                update(leases)
                .where(leases.c.holder == holder, leases.c.name.in_(list(names)))
                .values(until=until)
            )

    def release(self, name: str, holder: str) -> None:
        """Give the lease back, if `holder` still has it."""
        with self.store.write() as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    def lapsed(self, prefix: str, now: datetime) -> list[tuple[str, str]]:
        """(name, holder) of the leases named `prefix…` whose holder stopped renewing them."""
        query = (
            select(leases.c.name, leases.c.holder)
            .where(leases.c.name.startswith(prefix, autoescape=True), leases.c.until <= now)
            .order_by(leases.c.name)
        )
        with self.store.read() as conn:
            return [(row.name, row.holder) for row in conn.execute(query)]
