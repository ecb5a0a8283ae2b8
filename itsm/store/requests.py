"""Service requests in the records, every change audited in the same transaction.

A change is read under the write lock, the state machine in `itsm.requests` decides, and the
version guards against any writer that did not take the lock (`itsm.store.record_table`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    String,
    Text,
    func,
    or_,
    select,
)

from opsflow.errors import PermanentError
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
from opsflow.itsm.store.db import Database, Json, UtcDateTime, take_turns
from opsflow.itsm.store.leases import LeaseClaim, unleased
from opsflow.itsm.store.record_store import TransitionStore
from opsflow.itsm.store.record_table import RecordTable, state_action, versioned_table

LEASE_PREFIX = "request:"
"""Requests are leased as `request:ID` by whoever carries them."""

service_requests = versioned_table(
    "service_requests",
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
    states=REQUEST_STATES,
)
Index("ix_service_requests_state", service_requests.c.state)
Index("ix_service_requests_requester", service_requests.c.requester)


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
    if before.state == after.state:
        if before.escalated_at != after.escalated_at:
            return "escalated"
        if before.attachments != after.attachments:
            return "attached"
    return state_action(before, after)


REQUESTS = RecordTable(
    service_requests,
    ServiceRequest,
    "service_request",
    "service request",
    REQUEST_NUMBERING,
    action=_action,
)
"""Service requests as versioned, audited records."""


class Requests(TransitionStore[ServiceRequest, RequestState]):
    """The service requests of `db`: create, read, move through the state machine, audit."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, REQUESTS, apply_transition)

    # -- reading --------------------------------------------------------------------------

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
        c = service_requests.c
        where = []
        if visible_to is not None:
            where.append(or_(c.requester == visible_to, c.item.in_(list(items))))
        return self.page(*where, limit=limit, offset=offset, state=state, requester=requester)

    def awaiting_decision(
        self, items: Sequence[str], not_requested_by: str, limit: int = 100
    ) -> builtins.list[ServiceRequest]:
        """Requests for catalog `items` by anyone but `not_requested_by`, waiting for
        approval: what that person may decide, the longest waiting first."""
        c = service_requests.c
        waiting = [c.item.in_(list(items)), c.requester != not_requested_by]
        return self.page(*waiting, limit=limit, state=["awaiting-approval"], oldest_first=True)

    def unclaimed(self, changed_before: datetime | None = None) -> builtins.list[int]:
        """Ids of the requests not yet final that no lease covers (nobody carries them),
        oldest first; with `changed_before`, only those unchanged since then."""
        c = service_requests.c
        query = unleased(service_requests, LEASE_PREFIX, c.state.in_(CARRIED_STATES))
        if changed_before is not None:
            query = query.where(c.updated_at < changed_before)
        return self.ids(query)

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
        }
        ServiceRequest.model_validate({"id": 1, **values})  # refuse bad values before writing
        with self.db.write() as conn:
            if max_open is not None:
                take_turns(conn, requester)
                open_requests = conn.execute(
                    select(func.count()).where(
                        service_requests.c.requester == requester,
                        service_requests.c.state.in_(CARRIED_STATES),
                    )
                ).scalar_one()
                if open_requests >= max_open:
                    raise RequestQuotaError(requester, open_requests, max_open)
            created = REQUESTS.insert(conn, values, actor, now, "submitted", flow_run_id)
            if lease is not None:
                lease.take(conn, created.id, now)
        return created

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
        return self.change(id_or_number, lambda _: changes, actor, now, flow_run_id)

    def attach(
        self,
        id_or_number: int | str,
        attachments: Sequence[Attachment],
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> ServiceRequest:
        """Attach files to the request; an attachment already there (same sha256) is skipped."""

        def new(before: ServiceRequest) -> dict[str, Any]:
            known = {(a.sha256, a.path) for a in before.attachments}
            added = [a for a in attachments if (a.sha256, a.path) not in known]
            return {"attachments": [*before.attachments, *added]} if added else {}

        return self.change(id_or_number, new, actor, now, flow_run_id)
