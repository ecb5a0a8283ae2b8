"""Releases in the records, every change audited in the same transaction.

A change is read under the write lock, the state machine in `itsm.releases` decides, and the
version guards against any writer that did not take the lock (`itsm.store.record_table`).
Each host's step of the rollout is written as it happens, so the record says which hosts a
rollout changed even when the process carrying it died.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    or_,
    select,
)

from opsflow.itsm.records import AuditEntry
from opsflow.itsm.releases import (
    CARRIED_STATES,
    RELEASE_NUMBERING,
    RELEASE_STATES,
    Release,
    ReleaseHost,
    ReleaseState,
    apply_transition,
)
from opsflow.itsm.store.audit import Audit
from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata
from opsflow.itsm.store.leases import leases
from opsflow.itsm.store.record_table import RecordTable, state_action

RECORD_TYPE = "release"
LEASE_PREFIX = "release:"
"""Releases are leased as `release:ID` by whoever carries their rollout."""

releases = Table(
    "releases",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("service", String(255), nullable=False),
    Column("to_version", String(64), nullable=False),
    Column("from_version", Text),
    Column("batch", String(8), nullable=False),
    Column("canary", Integer, nullable=False),
    Column("pause_s", Float, nullable=False),
    Column("requester", String(255), nullable=False),
    Column("approver", String(255), nullable=False),
    Column("request", String(32)),
    Column("state", String(16), nullable=False),
    Column("hosts", Json, nullable=False),
    Column("outcome", Text),
    Column("rollback", Text),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("flow_run_ids", Json, nullable=False),
    Column("incidents", Json, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    CheckConstraint(RELEASE_STATES.sql_check(), name="ck_releases_state"),
    sqlite_autoincrement=True,  # never reuse an id, so never reuse a release number
)
Index("ix_releases_state", releases.c.state)
Index("ix_releases_service", releases.c.service, releases.c.id)


def _action(before: Release, after: Release) -> str:
    """A short audit name for a change: the new state, else the host step that changed."""
    if before.state == after.state and before.incidents != after.incidents:
        return "incident_linked"
    if before.state == after.state and before.hosts != after.hosts:
        changed = [h for h in after.hosts if before.host(h.host) != h]
        if len(changed) == 1:
            return f"host_{changed[0].step.replace('-', '_')}"
        return "hosts_planned"
    return state_action(before, after)


RELEASES = RecordTable(releases, Release, RECORD_TYPE, "release", RELEASE_NUMBERING, action=_action)
"""Releases as versioned, audited records."""


class Releases:
    """The releases of `db`: record, read, move through the state machine, audit."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading --------------------------------------------------------------------------

    def get(self, id_or_number: int | str) -> Release:
        """One release by id (42, "42") or number ("REL0000042")."""
        return RELEASES.get(self.db, id_or_number)

    def list(
        self,
        state: Sequence[str] | None = None,
        service: str | None = None,
        limit: int = 100,
        offset: int = 0,
        request: str | None = None,
        visible_to: str | None = None,
    ) -> list[Release]:
        """Releases matching every filter given, newest first; with `visible_to`, only those
        that person asked for or approved."""
        query = select(releases)
        if visible_to is not None:
            query = query.where(
                or_(releases.c.requester == visible_to, releases.c.approver == visible_to)
            )
        if request is not None:
            query = query.where(releases.c.request == request)
        if state:
            query = query.where(releases.c.state.in_(list(state)))
        if service is not None:
            query = query.where(releases.c.service == service)
        query = query.order_by(releases.c.id.desc()).limit(limit).offset(offset)
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [Release.model_validate(dict(row)) for row in rows]

    def unclaimed(self, changed_before: datetime | None = None) -> builtins.list[int]:
        """Ids of the releases not yet final that no lease covers (nobody carries them),
        oldest first; with `changed_before`, only those unchanged since then."""
        lease_name = LEASE_PREFIX + releases.c.id.cast(String)
        query = (
            select(releases.c.id)
            .outerjoin(leases, leases.c.name == lease_name)
            .where(releases.c.state.in_(CARRIED_STATES), leases.c.name.is_(None))
            .order_by(releases.c.id)
        )
        if changed_before is not None:
            query = query.where(releases.c.updated_at < changed_before)
        with self.db.read() as conn:
            return list(conn.execute(query).scalars())

    def recent(self, since: datetime) -> builtins.list[Release]:
        """Releases started that were still rolling out, or ended, at `since` or later: the
        changes incidents opened since then may come from; newest first."""
        query = (
            select(releases)
            .where(
                releases.c.started_at.is_not(None),
                or_(releases.c.finished_at.is_(None), releases.c.finished_at >= since),
            )
            .order_by(releases.c.started_at.desc(), releases.c.id.desc())
        )
        with self.db.read() as conn:
            return [Release.model_validate(dict(r)) for r in conn.execute(query).mappings()]

    def with_incidents(self, since: datetime) -> builtins.list[Release]:
        """Releases started since `since` that incidents were linked to, newest first."""
        query = (
            select(releases)
            .where(releases.c.started_at >= since)
            .order_by(releases.c.started_at.desc(), releases.c.id.desc())
        )
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        found = [Release.model_validate(dict(row)) for row in rows]
        return [r for r in found if r.incidents]

    def audit_trail(self, id_or_number: int | str) -> builtins.list[AuditEntry]:
        """Every recorded change to one release, oldest first."""
        return Audit(self.db).trail(RECORD_TYPE, self.get(id_or_number).id)

    # -- changing -------------------------------------------------------------------------

    def create(
        self,
        service: str,
        to_version: str,
        requester: str,
        approver: str,
        actor: str,
        now: datetime,
        batch: str = "1",
        canary: int = 0,
        pause_s: float = 0.0,
        request: str | None = None,
        flow_run_id: str | None = None,
    ) -> Release:
        """Record an approved release (the service and version already checked against the
        estate), audited as approved by `actor`."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        values: dict[str, Any] = {
            "service": service,
            "to_version": to_version,
            "batch": batch,
            "canary": canary,
            "pause_s": pause_s,
            "requester": requester,
            "approver": approver,
            "request": request,
            "state": "approved",
            "hosts": [],
            "requested_at": now,
            "updated_at": now,
            "flow_run_ids": [flow_run_id] if flow_run_id else [],
            "incidents": [],
        }
        checked = Release.model_validate({"id": 1, **values})  # refuse bad values before writing
        values = checked.model_dump(include=set(values))
        with self.db.write() as conn:
            return RELEASES.insert(conn, values, actor, now, "approved", flow_run_id)

    def move(
        self,
        id_or_number: int | str,
        target: ReleaseState,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        **changes: Any,
    ) -> Release:
        """Move a release to `target` through the state machine, with field `changes`, audited.

        Raises:
            IllegalTransitionError: the state machine does not allow the move.
        """
        return RELEASES.modify(
            self.db,
            id_or_number,
            lambda before: apply_transition(before, target, now, **changes),
            actor,
            now,
            flow_run_id,
        )

    def plan_hosts(
        self,
        id_or_number: int | str,
        hosts: Sequence[ReleaseHost],
        from_version: str | None,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> Release:
        """Record the hosts a rollout will go through, keeping what an earlier run of it
        recorded for any of them (a rollout taken over keeps its progress)."""

        def change(before: Release) -> Release:
            known = {h.host: h for h in before.hosts}
            merged = [known.get(h.host, h) for h in hosts]
            kept = [h for h in before.hosts if h.host not in {m.host for m in merged}]
            after = {"hosts": [*merged, *kept], "from_version": before.from_version or from_version}
            if all(getattr(before, k) == v for k, v in after.items()):
                return before
            return before.model_copy(update={**after, "updated_at": now})

        return RELEASES.modify(self.db, id_or_number, change, actor, now, flow_run_id)

    def record_host(
        self,
        id_or_number: int | str,
        host: ReleaseHost,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> Release:
        """Record one host's step of the rollout (its entry replaced, or added), audited."""

        def change(before: Release) -> Release:
            if before.host(host.host) == host:
                return before
            if before.host(host.host) is None:
                hosts = [*before.hosts, host]
            else:
                hosts = [host if h.host == host.host else h for h in before.hosts]
            return before.model_copy(update={"hosts": hosts, "updated_at": now})

        return RELEASES.modify(self.db, id_or_number, change, actor, now, flow_run_id)

    def link_flow_run(
        self, id_or_number: int | str, flow_run_id: str, actor: str, now: datetime
    ) -> Release:
        """Record that a flow run acted on the release; linking it twice changes nothing."""

        def change(before: Release) -> Release:
            if flow_run_id in before.flow_run_ids:
                return before
            return before.model_copy(
                update={"flow_run_ids": [*before.flow_run_ids, flow_run_id], "updated_at": now}
            )

        return RELEASES.modify(self.db, id_or_number, change, actor, now, flow_run_id)

    def link_incident(
        self, id_or_number: int | str, incident: str, actor: str, now: datetime
    ) -> Release:
        """Record an incident that may have been caused by the release; twice changes nothing."""

        def change(before: Release) -> Release:
            if incident in before.incidents:
                return before
            return before.model_copy(
                update={"incidents": [*before.incidents, incident], "updated_at": now}
            )

        return RELEASES.modify(self.db, id_or_number, change, actor, now)

    def note(
        self,
        id_or_number: int | str,
        actor: str,
        action: str,
        detail: dict[str, Any],
        now: datetime,
        flow_run_id: str | None = None,
    ) -> None:
        """Append an audit entry about the release that changes none of its fields (a
        take-over, a notification sent)."""
        with self.db.write() as conn:
            release = RELEASES.fetch(conn, id_or_number)
            RELEASES.note(conn, release.id, actor, action, None, detail, now, flow_run_id)
