"""The per-service budget of automatic remediations: a count of those started, by time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, String, Table, func, insert, select

from opsflow.itsm.store.db import (
    Database,
    Id,
    UtcDateTime,
    metadata,
    require_aware,
    take_turns,
)

remediations = Table(
    "remediations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("service", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)
Index("ix_remediations_service_at", remediations.c.service, remediations.c.at)


class Remediations:
    """The automatic remediations counted in `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def spend(
        self, service: str, host: str, incident_id: int, budget: int, since: datetime, at: datetime
    ) -> int | None:
        """Count one automatic remediation of `service` if fewer than `budget` started since
        `since`; the count with it, or None when the budget is spent.

        Checking and counting are one write, so restorations of one service running at once
        cannot spend more than the budget between them.
        """
        require_aware(since, "since")
        require_aware(at, "at")
        used = select(func.count()).where(
            remediations.c.service == service, remediations.c.at >= since
        )
        with self.db.write() as conn:
            take_turns(conn, service)
            count = int(conn.execute(used).scalar_one())
            if count >= budget:
                return None
            conn.execute(
                insert(remediations).values(
                    service=service, host=host, incident_id=incident_id, at=at
                )
            )
        return count + 1
