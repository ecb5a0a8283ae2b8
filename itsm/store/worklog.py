"""Incident worklogs: the notes people and flows add to an incident, oldest first."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Connection, ForeignKey, Index, String, Table, Text, insert, select

from opsflow.itsm.records import WorklogEntry
from opsflow.itsm.store.db import Database, Id, UtcDateTime, metadata, require_aware
from opsflow.itsm.store.incidents import INCIDENTS

worklog = Table(
    "worklog",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("author", String(255), nullable=False),
    Column("text", Text, nullable=False),
)
Index("ix_worklog_incident", worklog.c.incident_id, worklog.c.id)


class Worklog:
    """The incidents' worklogs in `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, incident_id: int | str, author: str, text: str, at: datetime) -> WorklogEntry:
        """Add a note to an incident's worklog (audited as a change to the incident)."""
        require_aware(at, "at")
        if not author.strip() or not text.strip():
            raise ValueError("a worklog entry needs an author and a text")
        with self.db.write() as conn:
            incident = INCIDENTS.fetch(conn, incident_id)
            entry = add_entry(conn, incident.id, author, text, at)
            INCIDENTS.note(conn, incident.id, author, "worklog_added", None, entry, at)
        return entry

    def entries(self, incident_id: int | str, author: str | None = None) -> list[WorklogEntry]:
        """An incident's worklog, oldest first; only `author`'s entries when given (what a
        reporter may read of it: their own reports)."""
        with self.db.read() as conn:
            incident = INCIDENTS.fetch(conn, incident_id)
            query = select(worklog).where(worklog.c.incident_id == incident.id)
            if author is not None:
                query = query.where(worklog.c.author == author)
            rows = conn.execute(query.order_by(worklog.c.at, worklog.c.id)).mappings().all()
        return [WorklogEntry.model_validate(dict(row)) for row in rows]


def add_entry(
    conn: Connection, incident_id: int, author: str, text: str, at: datetime
) -> WorklogEntry:
    """Append an entry in `conn`'s transaction (the caller audits it) and return it."""
    values = {"incident_id": incident_id, "at": at, "author": author, "text": text}
    entry_id = conn.execute(insert(worklog).values(values).returning(worklog.c.id)).scalar_one()
    return WorklogEntry.model_validate({"id": entry_id, **values})
