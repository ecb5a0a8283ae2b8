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
    Column,
    Float,
    Index,
    Integer,
    String,
    Text,
    or_,
    select,
)

from opsflow.itsm.releases import (
    CARRIED_STATES,
    RELEASE_NUMBERING,
    RELEASE_STATES,
    Release,
    ReleaseHost,
    ReleaseState,
    apply_transition,
)
from opsflow.itsm.store.db import Database, Json, UtcDateTime
from opsflow.itsm.store.leases import unleased
from opsflow.itsm.store.record_store import TransitionStore
from opsflow.itsm.store.record_table import RecordTable, state_action, versioned_table

LEASE_PREFIX = "release:"
"""Releases are leased as `release:ID` by whoever carries their rollout."""

releases = versioned_table(
    "releases",
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
    states=RELEASE_STATES,
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


RELEASES = RecordTable(releases, Release, "release", numbering=RELEASE_NUMBERING, action=_action)
"""Releases as versioned, audited records."""


class Releases(TransitionStore[Release, ReleaseState]):
    """The releases of `db`: record, read, move through the state machine, audit."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, RELEASES, apply_transition)

    # -- reading --------------------------------------------------------------------------

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
        c = releases.c
        where = []
        if visible_to is not None:
            where.append(or_(c.requester == visible_to, c.approver == visible_to))
        return self.page(
            *where, limit=limit, offset=offset, state=state, service=service, request=request
        )

    def unclaimed(self, changed_before: datetime | None = None) -> builtins.list[int]:
        """Ids of the releases not yet final that no lease covers (nobody carries them),
        oldest first; with `changed_before`, only those unchanged since then."""
        query = unleased(releases, LEASE_PREFIX, releases.c.state.in_(CARRIED_STATES))
        if changed_before is not None:
            query = query.where(releases.c.updated_at < changed_before)
        return self.ids(query)

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
        return self.read(query)

    def with_incidents(self, since: datetime) -> builtins.list[Release]:
        """Releases started since `since` that incidents were linked to, newest first."""
        query = (
            select(releases)
            .where(releases.c.started_at >= since)
            .order_by(releases.c.started_at.desc(), releases.c.id.desc())
        )
        return [r for r in self.read(query) if r.incidents]

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

        def planned(before: Release) -> dict[str, Any]:
            known = {h.host: h for h in before.hosts}
            merged = [known.get(h.host, h) for h in hosts]
            kept = [h for h in before.hosts if h.host not in {m.host for m in merged}]
            return {"hosts": [*merged, *kept], "from_version": before.from_version or from_version}

        return self.change(id_or_number, planned, actor, now, flow_run_id)

    def record_host(
        self,
        id_or_number: int | str,
        host: ReleaseHost,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> Release:
        """Record one host's step of the rollout (its entry replaced, or added), audited."""

        def recorded(before: Release) -> dict[str, Any]:
            if before.host(host.host) is None:
                return {"hosts": [*before.hosts, host]}
            return {"hosts": [host if h.host == host.host else h for h in before.hosts]}

        return self.change(id_or_number, recorded, actor, now, flow_run_id)

    def link_incident(
        self, id_or_number: int | str, incident: str, actor: str, now: datetime
    ) -> Release:
        """Record an incident that may have been caused by the release; twice changes nothing."""

        def linked(before: Release) -> dict[str, Any]:
            if incident in before.incidents:
                return {}
            return {"incidents": [*before.incidents, incident]}

        return self.change(id_or_number, linked, actor, now)
