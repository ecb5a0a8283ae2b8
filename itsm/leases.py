"""Named leases in the records store: who holds something, until when, across processes.

A lease is taken when it is free, lapsed or already the taker's; its holder renews it while
it works and releases it at the end. A holder that dies simply stops renewing, and once the
lease lapses anyone may take it over. Access grants lease accounts (`user:NAME`) so two runs
never change one account at once; desks lease the requests they carry (`request:ID`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Column, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from itsm.store import Store, UtcDateTime, metadata

leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("until", UtcDateTime, nullable=False),
)


class Leases:
    """The leases kept in `store`'s database (the table is created on first use)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_tables(leases)

    def take(self, name: str, holder: str, now: datetime, lease_s: float) -> bool:
        """Hold `name` for `lease_s` from `now` if it is free, lapsed or `holder`'s already."""
        until = now + timedelta(seconds=lease_s)
        try:
            with self.store.write() as conn:
                query = select(leases).where(leases.c.name == name)
                if self.store.dialect == "postgresql":
                    query = query.with_for_update()
                row = conn.execute(query).first()
                if row is None:
                    conn.execute(insert(leases).values(name=name, holder=holder, until=until))
                    return True
                if row.holder != holder and row.until > now:
                    return False
                conn.execute(
                    update(leases).where(leases.c.name == name).values(holder=holder, until=until)
                )
                return True
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
