"""Access grants in the records: one table, state changes guarded and audited.

Every change reads the row under the store's write lock, checks the state machine, bumps the
version and writes its audit row (record type "access_grant") in the same transaction, as
every kind of record does (`itsm.store.record_table`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    Index,
    String,
    Text,
    func,
    or_,
    select,
)

from opsflow.itsm.access import (
    GRANT_STATES,
    LIVE_STATES,
    AccessGrant,
    AccessRequestInvalidError,
    AccessState,
    ResolvedRequest,
)
from opsflow.itsm.store.db import Database, Json, UtcDateTime
from opsflow.itsm.store.leases import unleased
from opsflow.itsm.store.record_store import RecordStore
from opsflow.itsm.store.record_table import RecordTable, versioned_table

LEASE_PREFIX = "grant:"
"""Grants waiting for a change on hosts are leased as `grant:ID` by whoever carries it out."""

access_grants = versioned_table(
    "access_grants",
    Column("entitlement", String(63), nullable=False),
    Column("privilege", String(16), nullable=False),
    Column("host_group", String(63), nullable=False),
    Column("requester", String(255), nullable=False),
    Column("username", String(32), nullable=False),
    Column("ssh_public_key", Text, nullable=False),
    Column("duration_minutes", Float, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("approver", String(255)),
    Column("decided_at", UtcDateTime),
    Column("decision_comment", Text),
    Column("hosts", Json, nullable=False),
    Column("starts_at", UtcDateTime),
    Column("ends_at", UtcDateTime),
    Column("revoke_requested_at", UtcDateTime),
    Column("revoke_requested_by", String(255)),
    Column("ended_at", UtcDateTime),
    Column("last_error", Text),
    Column("flow_run_ids", Json, nullable=False),
    CheckConstraint("privilege IN ('login', 'sudo')", name="ck_access_grants_privilege"),
    CheckConstraint("duration_minutes > 0", name="ck_access_grants_duration"),
    states=GRANT_STATES,
)
Index("ix_access_grants_state", access_grants.c.state)
Index("ix_access_grants_username", access_grants.c.username, access_grants.c.state)


class AccessGrants(RecordStore[AccessGrant]):
    """The access grants of `db`; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, GRANTS)

    # -- reading ---------------------------------------------------------------------------

    def list(
        self,
        state: list[str] | None = None,
        requester: str | None = None,
        limit: int = 100,
        offset: int = 0,
        visible_to: str | None = None,
        entitlements: Sequence[str] = (),
    ) -> list[AccessGrant]:
        """Grants, newest first, filtered by state and requester.

        With `visible_to`, only that person's grants and those of `entitlements` (what they
        may approve).
        """
        c = access_grants.c
        where = []
        if visible_to is not None:
            where.append(or_(c.requester == visible_to, c.entitlement.in_(list(entitlements))))
        return self.page(
            *where, limit=limit, offset=offset, state=state, requester=requester or None
        )

    def awaiting_decision(
        self, entitlements: Sequence[str], not_requested_by: str, limit: int = 100
    ) -> builtins.list[AccessGrant]:
        """Grants requested for `entitlements` by anyone but `not_requested_by`, waiting for
        a decision: what that person may decide, the longest waiting first."""
        c = access_grants.c
        waiting = [c.entitlement.in_(list(entitlements)), c.requester != not_requested_by]
        return self.page(*waiting, limit=limit, state=["requested"], oldest_first=True)

    def live(self) -> builtins.list[AccessGrant]:
        """Every approved or active grant: what explains access found on hosts."""
        query = select(access_grants).where(access_grants.c.state.in_(LIVE_STATES))
        return self.read(query.order_by(access_grants.c.id))

    def unclaimed(self, changed_before: datetime | None = None) -> builtins.list[int]:
        """Ids of the grants waiting for a change on hosts (`AccessGrant.pending_change`) that
        no lease covers, oldest first; with `changed_before`, only those approved or asked to
        be revoked before then."""
        c = access_grants.c
        query = unleased(
            access_grants,
            LEASE_PREFIX,
            c.state.in_(LIVE_STATES),
            c.last_error.is_(None),
            or_(c.state == "approved", c.revoke_requested_at.is_not(None)),
        )
        if changed_before is not None:
            query = query.where(func.coalesce(c.revoke_requested_at, c.decided_at) < changed_before)
        return self.ids(query)

    def due_for_removal(self, now: datetime) -> builtins.list[AccessGrant]:
        """Live grants past their end, or whose revocation was asked for and not yet done."""
        return [g for g in self.live() if g.revoke_requested_at is not None or g.due_end() <= now]

    # -- changing --------------------------------------------------------------------------

    def request(self, resolved: ResolvedRequest, requester: str, now: datetime) -> AccessGrant:
        """Record a new request (state requested), audited.

        Raises:
            AccessRequestInvalidError: the username is held by another person's grant.
        """
        entitlement = resolved.entitlement
        values: dict[str, Any] = {
            "entitlement": entitlement.name,
            "privilege": entitlement.privilege,
            "host_group": entitlement.group,
            "requester": requester,
            "username": resolved.username,
            "ssh_public_key": resolved.ssh_public_key,
            "duration_minutes": resolved.duration_minutes,
            "reason": resolved.reason,
            "state": "requested",
            "requested_at": now,
            "hosts": [],
            "flow_run_ids": [],
        }
        with self.db.write() as conn:
            holder = conn.execute(
                select(access_grants.c.id, access_grants.c.requester).where(
                    access_grants.c.username == resolved.username,
                    access_grants.c.requester != requester,
                    access_grants.c.state.not_in(GRANT_STATES.final),
                )
            ).first()
            if holder is not None:
                raise AccessRequestInvalidError(
                    "username",
                    f"{resolved.username!r} is the account of {holder.requester} "
                    f"(access grant {holder.id})",
                )
            return GRANTS.insert(conn, values, requester, now, "requested")

    def decide(
        self, grant_id: int, approve: bool, approver: str, comment: str, now: datetime
    ) -> AccessGrant:
        """Approve or deny a requested grant (the approver's right is checked by the caller).

        An approved grant waits, unleased, for a worker to put it in place (`unclaimed`).
        """
        target: AccessState = "approved" if approve else "denied"

        def decided(before: AccessGrant) -> dict[str, Any]:
            GRANT_STATES.check(before.state, target, f"access grant {before.id}")
            extra: dict[str, Any] = {"ended_at": now} if target == "denied" else {}
            return {
                "state": target,
                "approver": approver,
                "decided_at": now,
                "decision_comment": comment or None,
                **extra,
            }

        return self.change(grant_id, decided, approver, now, None)

    def activate(
        self,
        grant_id: int,
        hosts: builtins.list[str],
        now: datetime,
        actor: str,
        flow_run_id: str | None = None,
    ) -> AccessGrant:
        """Record the access as in place on `hosts` from `now`; an active grant keeps its end."""

        def activated(before: AccessGrant) -> dict[str, Any]:
            if before.state == "active":
                return {"hosts": sorted(set(before.hosts) | set(hosts)), "last_error": None}
            GRANT_STATES.check(before.state, "active", f"access grant {before.id}")
            return {
                "state": "active",
                "hosts": sorted(hosts),
                "starts_at": now,
                "ends_at": now + timedelta(minutes=before.duration_minutes),
                "last_error": None,
            }

        return self.change(grant_id, activated, actor, now, flow_run_id)

    def record_error(
        self, grant_id: int, error: str, now: datetime, actor: str, flow_run_id: str | None = None
    ) -> AccessGrant:
        """Keep why the last grant or revoke attempt failed, for the requester and the review."""
        return self.change(
            grant_id, lambda _: {"last_error": error[-4000:]}, actor, now, flow_run_id
        )

    def request_revoke(self, grant_id: int, actor: str, now: datetime) -> AccessGrant:
        """Mark a live grant for revocation, so it is removed even if this attempt fails.

        The last error is cleared, so the revocation waits for a worker like any change
        (`unclaimed`): the error of a grant that could not be put in place is about a change
        nobody wants any more, and asking again retries a revocation that failed.
        """

        def marked(before: AccessGrant) -> dict[str, Any]:
            GRANT_STATES.check(before.state, "revoked", f"access grant {before.id}")
            if before.revoke_requested_at is not None:
                return {"last_error": None}
            return {"revoke_requested_at": now, "revoke_requested_by": actor, "last_error": None}

        return self.change(grant_id, marked, actor, now, None)

    def end(
        self,
        grant_id: int,
        state: AccessState,
        now: datetime,
        actor: str,
        flow_run_id: str | None = None,
    ) -> AccessGrant:
        """Close a grant whose access is gone from its hosts: expired or revoked."""
        if state not in ("expired", "revoked"):
            raise ValueError(f"state: a grant ends expired or revoked, not {state}")

        def ended(before: AccessGrant) -> dict[str, Any]:
            GRANT_STATES.check(before.state, state, f"access grant {before.id}")
            return {"state": state, "ended_at": now, "last_error": None}

        return self.change(grant_id, ended, actor, now, flow_run_id)


def _action(before: AccessGrant, after: AccessGrant) -> str:
    """A short name for a change: the new state when it changed, else what changed."""
    if before.state != after.state:
        return after.state
    if before.revoke_requested_at != after.revoke_requested_at:
        return "revoke_requested"
    if before.flow_run_ids != after.flow_run_ids:
        return "flow_run_linked"
    if after.last_error and before.last_error != after.last_error:
        return "failed"
    return "updated"


GRANTS = RecordTable(access_grants, AccessGrant, "access_grant", "access grant", action=_action)
"""Access grants as versioned, audited records."""
