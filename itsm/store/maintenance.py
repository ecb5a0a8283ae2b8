"""Maintenance windows declared at run time by the jobs that stop things, kept in the records.

A job that stops a service declares a window over its hosts before it starts and closes it
when it ends; triage suppresses the incidents that events occurring inside a window would
open, exactly as it does for the estate's planned windows. A window always carries an end:
if the job dies without closing it, the window still lapses at the bound it declared, and
whoever takes the job's work over finds it by the flow run that declared it and closes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Column, Index, String, Table, Text, insert, select, update

from opsflow.errors import PermanentError
from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata

maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("hosts", Json, nullable=False),
    Column("start", UtcDateTime, nullable=False),
    Column("end", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    Column("flow_run_id", String(64)),
    Column("silence_ids", Json),
    sqlite_autoincrement=True,
)
Index("ix_maintenance_windows_end", maintenance_windows.c.end)


class DeclaredWindow(BaseModel):
    """A maintenance window a job declared: which hosts, why, from when to when."""

    id: int
    name: str = Field(description="Who declared it, usually the flow's name.")
    reason: str
    hosts: list[str]
    start: AwareDatetime
    end: AwareDatetime = Field(description="When it lapses; closing it early moves this.")
    closed_at: AwareDatetime | None = None
    flow_run_id: str | None = None
    silence_ids: list[str] | None = Field(
        default=None,
        description="The Alertmanager silences mirroring the window (None: not mirrored).",
    )

    @property
    def label(self) -> str:
        """How triage names the window in its decision: `name #id`."""
        return f"{self.name} #{self.id}"

    def covers(self, host: str, at: datetime) -> bool:
        """Whether the window covers `host` at the instant `at`."""
        return host in self.hosts and self.start <= at < self.end


class WindowNotFoundError(PermanentError, LookupError):
    """No declared maintenance window has that id."""


@dataclass(frozen=True)
class WindowIndex:
    """The declared windows relevant to one batch of events, read with a single query."""

    windows: tuple[DeclaredWindow, ...]

    def covering(self, host: str | None, at: datetime) -> str | None:
        """The label of a window covering `host` at `at`, if any."""
        if host is None:
            return None
        return next((w.label for w in self.windows if w.covers(host, at)), None)


class MaintenanceWindows:
    """The maintenance windows jobs declared, kept in `db`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def declare(
        self,
        name: str,
        hosts: Iterable[str],
        reason: str,
        start: datetime,
        end: datetime,
        flow_run_id: str | None = None,
    ) -> DeclaredWindow:
        """Record a window over `hosts` from `start` to `end` and return it."""
        hosts = sorted(set(hosts))
        if not hosts:
            raise PermanentError("a maintenance window needs at least one host")
        if end <= start:
            raise PermanentError(
                f"maintenance window {name!r}: end {end} is not after start {start}"
            )
        row: dict[str, Any] = {
            "name": name[:255],
            "reason": reason,
            "hosts": hosts,
            "start": start,
            "end": end,
            "flow_run_id": flow_run_id,
        }
        with self.db.write() as conn:
            key = conn.execute(insert(maintenance_windows).values(row)).inserted_primary_key
        assert key is not None, "an insert of one row has its primary key"
        return DeclaredWindow(id=key[0], **row)

    def close(self, window_id: int, end: datetime, closed_at: datetime) -> DeclaredWindow:
        """End a window at `end` (never later than it was declared to end); safe to repeat."""
        table = maintenance_windows
        with self.db.write() as conn:
            row = conn.execute(select(table).where(table.c.id == window_id)).mappings().first()
            if row is None:
                raise WindowNotFoundError(f"no maintenance window {window_id}")
            before = DeclaredWindow.model_validate(dict(row))
            after = before.model_copy(
                update={"end": min(before.end, end), "closed_at": before.closed_at or closed_at}
            )
            conn.execute(
                update(table)
                .where(table.c.id == window_id)
                .values(end=after.end, closed_at=after.closed_at)
            )
        return after

    def record_silences(self, window_id: int, silence_ids: list[str]) -> DeclaredWindow:
        """Keep the ids of the Alertmanager silences that mirror a window with it."""
        table = maintenance_windows
        with self.db.write() as conn:
            found = conn.execute(
                update(table).where(table.c.id == window_id).values(silence_ids=silence_ids)
            )
            if found.rowcount == 0:
                raise WindowNotFoundError(f"no maintenance window {window_id}")
        return self.get(window_id)

    def get(self, window_id: int) -> DeclaredWindow:
        """One declared window by id."""
        query = select(maintenance_windows).where(maintenance_windows.c.id == window_id)
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise WindowNotFoundError(f"no maintenance window {window_id}")
        return DeclaredWindow.model_validate(dict(row))

    def between(self, start: datetime, end: datetime) -> list[DeclaredWindow]:
        """Every declared window that overlaps the interval [start, end], oldest first."""
        table = maintenance_windows
        query = select(table).where(table.c.start <= end, table.c.end > start).order_by(table.c.id)
        with self.db.read() as conn:
            return [DeclaredWindow.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def left_open(self, flow_run_ids: Iterable[str], at: datetime) -> list[DeclaredWindow]:
        """The windows the runs `flow_run_ids` declared and never closed that still hold at `at`,
        oldest first: what a run that died inside its work left behind."""
        runs = sorted(set(flow_run_ids))
        if not runs:
            return []
        table = maintenance_windows
        query = (
            select(table)
            .where(table.c.end > at, table.c.closed_at.is_(None), table.c.flow_run_id.in_(runs))
            .order_by(table.c.id)
        )
        with self.db.read() as conn:
            return [DeclaredWindow.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def active(self, host: str, at: datetime) -> list[str]:
        """The labels (`name #id`) of the declared windows covering `host` at `at`."""
        return [w.label for w in self.between(at, at) if w.covers(host, at)]

    def index(self, instants: Iterable[datetime]) -> WindowIndex:
        """The windows overlapping the span of `instants` (a triage batch's occurred_at times)."""
        instants = list(instants)
        if not instants:
            return WindowIndex(())
        return WindowIndex(tuple(self.between(min(instants), max(instants))))
