"""What every kind of record's store offers over its `RecordTable`, written once.

Incidents, problems, known errors, service requests, access grants and releases each have a
store: a `RecordStore` of the record's model over its table, which reads one record by id or
number, pages of them, its audit trail, and changes one (notes, linked flow runs, fields set)
as its next version with its audit row. An `UpdateStore` (incidents, problems) also applies a PATCH
through the kind's rules, a `TransitionStore` (requests, releases) a move to a named state.
Each store keeps only the queries and changes particular to its record.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, select

from opsflow.itsm.records import AuditEntry
from opsflow.itsm.store.audit import Audit
from opsflow.itsm.store.db import Database
from opsflow.itsm.store.record_table import RecordTable

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=str)
S_contra = TypeVar("S_contra", bound=str, contravariant=True)
U = TypeVar("U", bound=BaseModel)
Fields = Callable[[M], dict[str, Any]]
"""The fields a change sets on a record read under the lock (none: it changes nothing)."""


class Transition(Protocol[M, S_contra]):
    """A kind's move through its state machine: the record moved to `target` at `now` with
    field `changes`, or `IllegalTransitionError`."""

    def __call__(self, record: M, target: S_contra, now: datetime, /, **changes: Any) -> M: ...


class RecordStore(Generic[M]):
    """The records `records` keeps in `db`; safe to share between threads.

    Args:
        db: the records database.
        records: the kind's versioned, audited table.
    """

    def __init__(self, db: Database, records: RecordTable[M]) -> None:
        self.db = db
        self.records = records
        self._stamped = "updated_at" in records.model.model_fields

    # -- reading --------------------------------------------------------------------------

    def get(self, id_or_number: int | str) -> M:
        """One record by id (42, "42") or number ("INC0000042", where the kind has numbers).

        Raises:
            RecordNotFoundError: none has that id or number.
        """
        return self.records.get(self.db, id_or_number)

    def audit_trail(self, id_or_number: int | str) -> builtins.list[AuditEntry]:
        """Every recorded change to one record, oldest first."""
        record_id: int = self.get(id_or_number).id  # type: ignore[attr-defined]
        return Audit(self.db).trail(self.records.record_type, record_id)

    def read(self, query: Select[Any]) -> builtins.list[M]:
        """The records `query` selects (whole rows of the kind's table), in its order."""
        with self.db.read() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
            return self.records.load(conn, rows)

    def page(
        self,
        *where: ColumnElement[bool],
        limit: int,
        offset: int = 0,
        state: Sequence[str] | None = None,
        oldest_first: bool = False,
        **equal: object,
    ) -> builtins.list[M]:
        """Records matching every condition in `where`, one of `state` (when given) and each
        column of `equal` whose value is not None; newest first unless `oldest_first`."""
        columns = self.records.table.c
        conditions = [*where]
        if state:
            conditions.append(columns.state.in_(list(state)))
        conditions += [columns[name] == value for name, value in equal.items() if value is not None]
        order = columns.id if oldest_first else columns.id.desc()
        query = select(self.records.table).where(*conditions).order_by(order)
        return self.read(query.limit(limit).offset(offset))

    def ids(self, query: Select[Any]) -> builtins.list[int]:
        """The ids `query` selects, in its order."""
        with self.db.read() as conn:
            return list(conn.execute(query).scalars())

    # -- changing -------------------------------------------------------------------------

    def change(
        self,
        id_or_number: int | str,
        fields: Fields[M],
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> M:
        """Set the `fields` a record read under the lock asks for, as its next version,
        audited (stamped `updated_at` when the kind keeps it); the same record when they
        change nothing.

        Raises:
            pydantic.ValidationError: a field's value does not fit the record; nothing changes.
        """

        def next_version(before: M) -> M:
            changes = fields(before)
            if all(getattr(before, name) == value for name, value in changes.items()):
                return before
            if self._stamped:
                changes = {**changes, "updated_at": now}
            return self.records.model.model_validate({**before.model_dump(), **changes})

        return self.records.modify(self.db, id_or_number, next_version, actor, now, flow_run_id)

    def link_flow_run(
        self,
        id_or_number: int | str,
        flow_run_id: str,
        actor: str = "opsflow",
        now: datetime | None = None,
    ) -> M:
        """Record that a flow run acted on the record; linking it twice changes nothing."""

        def link(before: Any) -> dict[str, Any]:
            if flow_run_id in before.flow_run_ids:
                return {}
            return {"flow_run_ids": [*before.flow_run_ids, flow_run_id]}

        return self.change(id_or_number, link, actor, now or datetime.now(UTC), flow_run_id)

    def note(
        self,
        id_or_number: int | str,
        actor: str,
        action: str,
        detail: dict[str, Any],
        now: datetime,
        flow_run_id: str | None = None,
    ) -> None:
        """Append an audit entry about the record that changes none of its fields: what
        happened to it without changing it (a take-over, a decision sent, a notification)."""
        with self.db.write() as conn:
            record = self.records.fetch(conn, id_or_number)
            record_id: int = record.id  # type: ignore[attr-defined]
            self.records.note(conn, record_id, actor, action, None, detail, now, flow_run_id)


class TransitionStore(RecordStore[M], Generic[M, S]):
    """A store whose records move through their state machine by the kind's `transition`
    (requests, releases).

    Args:
        db: the records database.
        records: the kind's versioned, audited table.
        transition: the rules module's move, which checks the state machine.
    """

    def __init__(self, db: Database, records: RecordTable[M], transition: Transition[M, S]) -> None:
        super().__init__(db, records)
        self._transition = transition

    def move(
        self,
        id_or_number: int | str,
        target: S,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        **changes: Any,
    ) -> M:
        """Move a record to `target` through the state machine, with field `changes`, audited.

        Raises:
            IllegalTransitionError: the state machine does not allow the move.
        """

        def moved(before: M) -> M:
            return self._transition(before, target, now, **changes)

        return self.records.modify(self.db, id_or_number, moved, actor, now, flow_run_id)


class UpdateStore(RecordStore[M], Generic[M, U]):
    """A store whose records change by an update model (a PATCH) applied through the kind's
    rules (incidents, problems).

    Args:
        db: the records database.
        records: the kind's versioned, audited table.
        apply: the record after an update at a time; the same record when nothing changes.
    """

    def __init__(
        self, db: Database, records: RecordTable[M], apply: Callable[[M, U, datetime], M]
    ) -> None:
        super().__init__(db, records)
        self._apply = apply

    def update(
        self,
        id_or_number: int | str,
        update: U,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        expected_version: int | None = None,
    ) -> M:
        """Apply an update through the kind's state machine and rules and record it as the
        next version, audited; the same record when it changes nothing.

        With `expected_version` (an HTTP If-Match), a caller who saw another version gets
        `StaleVersionError` and nothing changes.

        Raises:
            IllegalTransitionError, InvalidUpdateError: the update is refused; nothing changes.
            StaleVersionError: `expected_version` is not the current version.
            ConcurrentUpdateError: other writers won every retry.
        """

        def updated(before: M) -> M:
            return self._apply(before, update, now)

        return self.records.modify(
            self.db, id_or_number, updated, actor, now, flow_run_id, expected_version
        )
