"""One versioned, audited record table: the shape every kind of record is stored in.

Incidents, problems, known errors, service requests, access grants and releases each live in
a table (`versioned_table`) with an id, a `version` bumped on every change, and rows in the
audit for every change. A `RecordTable` reads one by id or number, inserts one (audited as
opened), and changes one under its version guard with the audit row in the same transaction:
the row is read under the write lock (BEGIN IMMEDIATE on SQLite, FOR UPDATE on PostgreSQL), so
concurrent writers queue rather than fail, and the version condition on the UPDATE is the
backstop for any writer that did not take the lock. Each kind's store over it is a
`record_store.RecordStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Integer,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.sql.schema import SchemaItem

from opsflow.itsm.numbering import MAX_RECORD_ID, Numbering
from opsflow.itsm.states import StateMachine
from opsflow.itsm.store.audit import audit_entry, write_audit
from opsflow.itsm.store.db import Database, Id, metadata, require_aware
from opsflow.itsm.store.errors import (
    ConcurrentUpdateError,
    RecordNotFoundError,
    StaleVersionError,
)

RETRIES = 5
"""Attempts at a change whose row another writer changed first."""


M = TypeVar("M", bound=BaseModel)
Load = Callable[[Connection, list[dict[str, Any]]], list[Any]]


def versioned_table(
    name: str, *items: SchemaItem, states: StateMachine[Any] | None = None
) -> Table:
    """The table `name` of one kind of versioned record: an `id` never reused (SQLite's
    AUTOINCREMENT; an id is a record's number and names what it put on hosts), the columns
    and constraints in `items`, the `version` every change bumps, and, for a kind with
    `states`, the CHECK that a record's state is one of them."""
    if states is not None:
        items = (*items, CheckConstraint(states.sql_check(), name=f"ck_{name}_state"))
    return Table(
        name,
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        *items,
        Column("version", Integer, nullable=False, default=1),
        sqlite_autoincrement=True,
    )


class RecordTable(Generic[M]):
    """The records of one kind in `table`, as `model`s; every change versioned and audited.

    Args:
        table: the table, with `id` and `version` columns.
        model: the pydantic model of a record (with `id` and `version`).
        record_type: the record's name in the audit ("incident", "service_request", ...).
        name: how messages name the kind ("service request"); default `record_type`.
        numbering: the kind's numbering, when people name its records by number.
        action: the audit action of a change from one version to the next (without the
            "record_type." prefix); default `state_action`.
        load: builds records from rows read in a connection (to add what other tables
            hold); default the model of each row.
    """

    def __init__(
        self,
        table: Table,
        model: type[M],
        record_type: str,
        name: str | None = None,
        numbering: Numbering | None = None,
        action: Callable[[M, M], str] | None = None,
        load: Load | None = None,
    ) -> None:
        self.table = table
        self.model = model
        self.record_type = record_type
        self.name = name or record_type
        self.numbering = numbering
        self.columns = frozenset(c.name for c in table.columns if c.name != "id")
        self._action = action or state_action
        self._load = load

    # -- reading --------------------------------------------------------------------------

    def parse(self, key: int | str) -> int | None:
        """The id in `key` (an id, or a number of this kind); None when it is neither."""
        if self.numbering is not None:
            return self.numbering.parse(key)
        if isinstance(key, int):
            return key if 0 < key <= MAX_RECORD_ID else None
        return Numbering("").parse(key)

    def load(self, conn: Connection, rows: list[dict[str, Any]]) -> list[M]:
        """Records from rows read in `conn`."""
        if self._load is not None:
            return self._load(conn, rows)
        return [self.model.model_validate(row) for row in rows]

    def fetch(self, conn: Connection, key: int | str, lock: bool = False) -> M:
        """One record by id or number, read in `conn`'s transaction (locked when `lock`).

        Raises:
            RecordNotFoundError: none has that id or number (or it is no id at all).
        """
        record_id = self.parse(key)
        row = None
        if record_id is not None:
            query = select(self.table).where(self.table.c.id == record_id)
            if lock:
                query = query.with_for_update()
            row = conn.execute(query).mappings().first()
        if row is None:
            raise RecordNotFoundError(self.name, key)
        return self.load(conn, [dict(row)])[0]

    def get(self, db: Database, key: int | str) -> M:
        """One record by id or number."""
        with db.read() as conn:
            return self.fetch(conn, key)

    # -- changing -------------------------------------------------------------------------

    def insert(
        self,
        conn: Connection,
        values: dict[str, Any],
        actor: str,
        at: datetime,
        action: str,
        flow_run_id: str | None = None,
    ) -> M:
        """Insert a record (version 1) and audit it as `action`, in `conn`'s transaction."""
        values = {**values, "version": 1}
        new_id = conn.execute(
            insert(self.table).values(values).returning(self.table.c.id)
        ).scalar_one()
        record = self.load(conn, [{"id": new_id, **values}])[0]
        self.note(conn, new_id, actor, action, None, record, at, flow_run_id)
        return record

    def try_write(
        self,
        conn: Connection,
        before: M,
        after: M,
        actor: str,
        at: datetime,
        flow_run_id: str | None = None,
        action: str | None = None,
    ) -> M | None:
        """Write `after` over `before` as the next version, audited; None (nothing written)
        when the row is no longer at `before`'s version."""
        after = after.model_copy(update={"version": _version(before) + 1})
        result = conn.execute(
            update(self.table)
            .where(self.table.c.id == _id(before), self.table.c.version == _version(before))
            .values(after.model_dump(include=set(self.columns)))
        )
        if result.rowcount != 1:
            return None
        done = action or self._action(before, after)
        self.note(conn, _id(after), actor, done, before, after, at, flow_run_id)
        return after

    def write(
        self,
        conn: Connection,
        before: M,
        after: M,
        actor: str,
        at: datetime,
        flow_run_id: str | None = None,
        action: str | None = None,
    ) -> M:
        """`try_write`, for a change inside a larger transaction that must not go on without it.

        Raises:
            ConcurrentUpdateError: the row is no longer at `before`'s version.
        """
        written = self.try_write(conn, before, after, actor, at, flow_run_id, action)
        if written is None:
            raise ConcurrentUpdateError(self.name, _id(before), 1)
        return written

    def modify(
        self,
        db: Database,
        key: int | str,
        change: Callable[[M], M],
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        expected_version: int | None = None,
        guard: Callable[[Connection, M], bool] | None = None,
    ) -> M:
        """Change one record in a transaction of its own: read it under the write lock,
        apply `change`, write the next version and its audit row; the same record when
        `change` changes nothing.

        With `expected_version` (an HTTP If-Match), a caller who saw another version changes
        nothing. A `guard` that answers False leaves the record as it is (its own writes in
        the transaction still commit). A write lost to a writer that did not take the lock
        is tried again, a few times.

        Raises:
            StaleVersionError: `expected_version` is not the current version.
            ConcurrentUpdateError: other writers won every attempt.
        """
        require_aware(now, "now")
        for _attempt in range(RETRIES):
            with db.write() as conn:
                before = self.fetch(conn, key, lock=True)
                if expected_version is not None and _version(before) != expected_version:
                    raise StaleVersionError(
                        self.record_type, _id(before), expected_version, _version(before)
                    )
                if guard is not None and not guard(conn, before):
                    return before
                after = change(before)
                if after is before or after == before:
                    return before
                written = self.try_write(conn, before, after, actor, now, flow_run_id)
                if written is not None:
                    return written
        raise ConcurrentUpdateError(self.name, key, RETRIES)

    def note(
        self,
        conn: Connection,
        record_id: int,
        actor: str,
        action: str,
        before: BaseModel | dict[str, Any] | None,
        after: BaseModel | dict[str, Any] | None,
        at: datetime,
        flow_run_id: str | None = None,
    ) -> None:
        """Audit `action` (without the record type's prefix) on one record of this kind."""
        write_audit(
            conn,
            audit_entry(
                at,
                actor,
                f"{self.record_type}.{action}",
                self.record_type,
                record_id,
                before,
                after,
                flow_run_id,
            ),
        )


def state_action(before: Any, after: Any) -> str:
    """A change's audit action: the new state (in snake case) when the state changed, else
    "flow_run_linked" when only runs were linked, else "updated"."""
    if before.state != after.state:
        return after.state.lower().replace(" ", "_").replace("-", "_")
    if getattr(before, "flow_run_ids", None) != getattr(after, "flow_run_ids", None):
        return "flow_run_linked"
    return "updated"


def _id(record: BaseModel) -> int:
    return record.id  # type: ignore[attr-defined]


def _version(record: BaseModel) -> int:
    return record.version  # type: ignore[attr-defined]
