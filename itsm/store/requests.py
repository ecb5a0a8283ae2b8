"""Service requests in the records, every change audited in the same transaction.

Changes follow the incidents' pattern:
the row is read under the write lock, the state machine in `itsm.requests` decides, and a
version column guards against any writer that did not take the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    or_,
    select,
    update,
)

from opsflow.errors import PermanentError
from opsflow.itsm.records import AuditEntry
from opsflow.itsm.requests import (
    CARRIED_STATES,
    REQUEST_NUMBERING,
    REQUEST_STATES,
    Attachment,
    InputValue,
    RequestState,
    ServiceRequest,
    apply_transition,
)
from opsflow.itsm.store.audit import Audit, audit, audit_row
from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata
from opsflow.itsm.store.errors import ConcurrentUpdateError, RecordNotFoundError
from opsflow.itsm.store.leases import LeaseClaim, leases

RECORD_TYPE = "service_request"
LEASE_PREFIX = "request:"
"""Requests are leased as `request:ID` by whoever carries them."""
_RETRIES = 5

service_requests = Table(
    "service_requests",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("item", String(63), nullable=False),
    Column("inputs", Json, nullable=False),
    Column("requester", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("approval_policy", String(8), nullable=False),
    Column("approver", String(255)),
    Column("decision_comment", Text),
    Column("decided_at", UtcDateTime),
    Column("approval_due_at", UtcDateTime),
    Column("escalated_at", UtcDateTime),
    Column("approval_run_id", String(64)),
    Column("submitted_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("fulfil_due_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("outcome", Text),
    Column("flow_run_ids", Json, nullable=False),
    Column("attachments", Json, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    CheckConstraint(REQUEST_STATES.sql_check(), name="ck_service_requests_state"),
    sqlite_autoincrement=True,  # never reuse an id, so never reuse a request number
)
Index("ix_service_requests_state", service_requests.c.state)
Index("ix_service_requests_requester", service_requests.c.requester)

_COLUMNS = [c.name for c in service_requests.columns if c.name != "id"]


class RequestQuotaError(PermanentError):
    """A person already has as many open requests as the estate allows: nothing recorded."""

    def __init__(self, requester: str, open_requests: int, limit: int) -> None:
        super().__init__(
            f"{requester} has {open_requests} open requests, the most the estate allows "
            f"(max_open_requests_per_person = {limit}); wait for one to finish, then submit again"
        )
        self.limit = limit


def _action(before: ServiceRequest, after: ServiceRequest) -> str:
    """A short audit name for a change: the new state when it changed, else what changed."""
    if before.state != after.state:
        return f"{RECORD_TYPE}.{after.state.replace('-', '_')}"
    if before.escalated_at != after.escalated_at:
        return f"{RECORD_TYPE}.escalated"
    if before.attachments != after.attachments:
        return f"{RECORD_TYPE}.attached"
    if before.flow_run_ids != after.flow_run_ids:
        return f"{RECORD_TYPE}.flow_run_linked"
    return f"{RECORD_TYPE}.updated"


class Requests:
    """The service requests of `db`: create, read, move through the state machine, audit."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading --------------------------------------------------------------------------

    def _fetch(
        self, conn: Connection, id_or_number: int | str, lock: bool = False
    ) -> ServiceRequest:
        request_id = REQUEST_NUMBERING.parse(id_or_number)
        row = None
        if request_id is not None:
            query = select(service_requests).where(service_requests.c.id == request_id)
            if lock:
                query = query.with_for_update()
            row = conn.execute(query).mappings().first()
        if row is None:
            raise RecordNotFoundError("service request", id_or_number)
        return ServiceRequest.model_validate(dict(row))

    def get(self, id_or_number: int | str) -> ServiceRequest:
        """One request by id (42, "42") or number ("REQ0000042")."""
        with self.db.read() as conn:
            return self._fetch(conn, id_or_number)

    def list(
        self,
        state: Sequence[str] | None = None,
        requester: str | None = None,
        limit: int = 100,
        offset: int = 0,
        visible_to: str | None = None,
        items: Sequence[str] = (),
    ) -> list[ServiceRequest]:
        """Requests matching every filter given, newest first.

        With `visible_to`, only that person's requests and those for `items` (what they may
        approve).
        """
        query = select(service_requests)
        if visible_to is not None:
            query = query.where(
                or_(
                    service_requests.c.requester == visible_to,
                    service_requests.c.item.in_(list(items)),
                )
            )
        if state:
            query = query.where(service_requests.c.state.in_(list(state)))
        if requester is not None:
            query = query.where(service_requests.c.requester == requester)
        query = query.order_by(service_requests.c.id.desc()).limit(limit).offset(offset)
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [ServiceRequest.model_validate(dict(row)) for row in rows]

    def unclaimed(self, changed_before: datetime | None = None) -> list[int]:
        """Ids of the requests not yet final that no lease covers (nobody carries them),
        oldest first; with `changed_before`, only those unchanged since then."""
        lease_name = LEASE_PREFIX + service_requests.c.id.cast(String)
        query = (
            select(service_requests.c.id)
            .outerjoin(leases, leases.c.name == lease_name)
            .where(service_requests.c.state.in_(CARRIED_STATES), leases.c.name.is_(None))
            .order_by(service_requests.c.id)
        )
        if changed_before is not None:
            query = query.where(service_requests.c.updated_at < changed_before)
        with self.db.read() as conn:
            return list(conn.execute(query).scalars())

    def audit_trail(self, id_or_number: int | str) -> list[AuditEntry]:
        """Every recorded change to one request, oldest first."""
        return Audit(self.db).trail(RECORD_TYPE, self.get(id_or_number).id)

    # -- changing -------------------------------------------------------------------------

    def create(
        self,
        item: str,
        inputs: dict[str, InputValue],
        requester: str,
        approval_policy: str,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        lease: LeaseClaim | None = None,
        max_open: int | None = None,
    ) -> ServiceRequest:
        """Record a submitted request (inputs already validated by `itsm.catalog`).

        Args:
            lease: the lease of whoever will carry the request, taken in the same
                transaction: the request is never recorded without it.
            max_open: the most open (not yet final) requests one requester may have,
                counted in the same transaction.

        Raises:
            RequestQuotaError: the requester has `max_open` open requests already.
            LeaseHeldError: the new request's lease is someone else's (nothing recorded).
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        values: dict[str, Any] = {
            "item": item,
            "inputs": dict(inputs),
            "requester": requester,
            "state": "submitted",
            "approval_policy": approval_policy,
            "submitted_at": now,
            "updated_at": now,
            "flow_run_ids": [flow_run_id] if flow_run_id else [],
            "attachments": [],
            "version": 1,
        }
        ServiceRequest.model_validate({"id": 1, **values})  # refuse bad values before writing
        with self.db.write() as conn:
            if max_open is not None:
                if conn.dialect.name == "postgresql":  # SQLite's writers are serial already
                    conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(requester))))
                open_requests = conn.execute(
                    select(func.count()).where(
                        service_requests.c.requester == requester,
                        service_requests.c.state.in_(CARRIED_STATES),
                    )
                ).scalar_one()
                if open_requests >= max_open:
                    raise RequestQuotaError(requester, open_requests, max_open)
            new_id = conn.execute(
                insert(service_requests).values(values).returning(service_requests.c.id)
            ).scalar_one()
            if lease is not None:
                lease.take(conn, new_id, now)
            created = ServiceRequest.model_validate({"id": new_id, **values})
            conn.execute(
                insert(audit),
                audit_row(
                    now,
                    actor,
                    f"{RECORD_TYPE}.submitted",
                    RECORD_TYPE,
                    new_id,
                    None,
                    created,
                    flow_run_id,
                ),
            )
        return created

    def move(
        self,
        id_or_number: int | str,
        target: RequestState,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        **changes: Any,
    ) -> ServiceRequest:
        """Move a request to `target` through the state machine, with field `changes`, audited.

        Raises:
            IllegalTransitionError: the state machine does not allow the move.
        """
        return self._modify(
            id_or_number,
            lambda before: apply_transition(before, target, now, **changes),
            actor,
            now,
            flow_run_id,
        )

    def update(
        self,
        id_or_number: int | str,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        **changes: Any,
    ) -> ServiceRequest:
        """Change fields that are not the state (approval window, escalation, outcome), audited."""
        if "state" in changes:
            raise ValueError("state: use move(), which checks the state machine")

        def change(before: ServiceRequest) -> ServiceRequest:
            if all(getattr(before, k) == v for k, v in changes.items()):
                return before
            return ServiceRequest.model_validate(
                {**before.model_dump(), **changes, "updated_at": now}
            )

        return self._modify(id_or_number, change, actor, now, flow_run_id)

    def link_flow_run(
        self, id_or_number: int | str, flow_run_id: str, actor: str, now: datetime
    ) -> ServiceRequest:
        """Record that a flow run acted on the request; linking it twice changes nothing."""

        def change(before: ServiceRequest) -> ServiceRequest:
            if flow_run_id in before.flow_run_ids:
                return before
            return before.model_copy(
                update={"flow_run_ids": [*before.flow_run_ids, flow_run_id], "updated_at": now}
            )

        return self._modify(id_or_number, change, actor, now, flow_run_id)

    def attach(
        self,
        id_or_number: int | str,
        attachments: Sequence[Attachment],
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> ServiceRequest:
        """Attach files to the request; an attachment already there (same sha256) is skipped."""

        def change(before: ServiceRequest) -> ServiceRequest:
            known = {(a.sha256, a.path) for a in before.attachments}
            new = [a for a in attachments if (a.sha256, a.path) not in known]
            if not new:
                return before
            return before.model_copy(
                update={"attachments": [*before.attachments, *new], "updated_at": now}
            )

        return self._modify(id_or_number, change, actor, now, flow_run_id)

    def note(
        self,
        id_or_number: int | str,
        actor: str,
        action: str,
        detail: dict[str, Any],
        now: datetime,
        flow_run_id: str | None = None,
    ) -> None:
        """Append an audit entry about the request that changes none of its fields.

        Used for what happened to a request without moving it: a decision sent to its run,
        a decision refused because it came from the Prefect UI.
        """
        with self.db.write() as conn:
            request = self._fetch(conn, id_or_number)
            conn.execute(
                insert(audit),
                {
                    "at": now,
                    "actor": actor,
                    "action": f"{RECORD_TYPE}.{action}",
                    "record_type": RECORD_TYPE,
                    "record_id": request.id,
                    "before": None,
                    "after": detail,
                    "flow_run_id": flow_run_id,
                },
            )

    def _modify(
        self,
        id_or_number: int | str,
        change: Callable[[ServiceRequest], ServiceRequest],
        actor: str,
        now: datetime,
        flow_run_id: str | None,
    ) -> ServiceRequest:
        """Change a request and audit it in one transaction, guarded by its version."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        for _attempt in range(_RETRIES):
            with self.db.write() as conn:
                before = self._fetch(conn, id_or_number, lock=True)
                after = change(before)
                if after is before or after == before:
                    return before
                after = after.model_copy(update={"version": before.version + 1})
                values = after.model_dump(mode="json", include=set(_COLUMNS))
                for field in (
                    "decided_at",
                    "approval_due_at",
                    "escalated_at",
                    "submitted_at",
                    "updated_at",
                    "fulfil_due_at",
                    "closed_at",
                ):
                    values[field] = getattr(after, field)
                result = conn.execute(
                    update(service_requests)
                    .where(
                        service_requests.c.id == before.id,
                        service_requests.c.version == before.version,
                    )
                    .values(values)
                )
                if result.rowcount != 1:
                    continue
                conn.execute(
                    insert(audit),
                    audit_row(
                        now,
                        actor,
                        _action(before, after),
                        RECORD_TYPE,
                        after.id,
                        before,
                        after,
                        flow_run_id,
                    ),
                )
                return after
        raise ConcurrentUpdateError("service request", id_or_number, _RETRIES)
