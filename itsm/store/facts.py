"""Facts history: what each host reported about itself at every fact gathering, in the records.

Technical and Application Management reads it to see a host as it is and as it was: one
snapshot per host per run (reachable or not, its facts, the state of the services the
inventory places on it), newest first, pruned by age rather than overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Boolean, Column, Index, String, Table, Text, delete, insert, select

from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata

host_facts = Table(
    "host_facts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("gathered_at", UtcDateTime, nullable=False),
    Column("reachable", Boolean, nullable=False),
    Column("facts", Json),
    Column("services", Json, nullable=False),
    Column("error", Text),
    Column("flow_run_id", String(64)),
    sqlite_autoincrement=True,
)
Index("ix_host_facts_host_at", host_facts.c.host, host_facts.c.gathered_at)


class FactsSnapshot(BaseModel):
    """One host at one fact gathering: its facts, or why there are none."""

    host: str
    gathered_at: AwareDatetime
    reachable: bool
    facts: dict[str, Any] | None = Field(
        default=None, description="The host's facts (OS, kernel, load, memory, disks)."
    )
    services: dict[str, str] = Field(
        default_factory=dict,
        description="State of each service the inventory places on the host: running, "
        "stopped, missing, unknown or unchecked.",
    )
    error: str | None = None
    flow_run_id: str | None = None


class StoredSnapshot(FactsSnapshot):
    """A snapshot as stored, with its id."""

    id: int


class FactsHistory:
    """The hosts' facts snapshots kept in `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, snapshots: Sequence[FactsSnapshot]) -> int:
        """Append one fact gathering's snapshots in one transaction; return how many."""
        if not snapshots:
            return 0
        with self.db.write() as conn:
            conn.execute(insert(host_facts), [s.model_dump() for s in snapshots])
        return len(snapshots)

    def latest(self, host: str) -> StoredSnapshot | None:
        """The newest snapshot of `host`, if it was ever gathered."""
        history = self.history(host, limit=1)
        return history[0] if history else None

    def history(self, host: str, limit: int = 10) -> list[StoredSnapshot]:
        """The newest `limit` snapshots of `host`, newest first."""
        query = (
            select(host_facts)
            .where(host_facts.c.host == host)
            .order_by(host_facts.c.gathered_at.desc(), host_facts.c.id.desc())
            .limit(limit)
        )
        with self.db.read() as conn:
            return [StoredSnapshot.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def prune(self, before: datetime) -> int:
        """Delete snapshots gathered before `before`; return how many went."""
        with self.db.write() as conn:
            deleted = conn.execute(delete(host_facts).where(host_facts.c.gathered_at < before))
            return deleted.rowcount
