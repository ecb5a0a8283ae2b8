"""Read and change opsflow's ITIL records from flows, each change audited with the flow run."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from opsflow.itsm.records import Incident, IncidentUpdate
from opsflow.itsm.releases import release_before
from opsflow.itsm.store.leases import RestorationClaim
from opsflow.itsm.store.records import open_records
from opsflow.settings import get_settings


def current_flow_run_id() -> str | None:
    """The id of the flow run this code runs in, for the audit trail."""
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


@dataclass(frozen=True)
class RunLease:
    """A flow run's lease on the record it carries (`name`, e.g. release:7), as `holder`.

    A run takes it before acting, renews it while it works and asks whether it still holds
    it before each step that changes something: one that stalled longer than the lease may
    have lost it to a worker that took the record over.
    """

    name: str
    holder: str
    seconds: float

    def take(self) -> bool:
        """Hold it, if it is free, lapsed or this holder's already."""
        return open_records().leases.take(self.name, self.holder, datetime.now(UTC), self.seconds)

    def taker(self) -> str | None:
        """Who holds it now, if anyone."""
        return open_records().leases.holder(self.name, datetime.now(UTC))

    def kept(self) -> bool:
        """Whether this holder still holds it (renewing it)."""
        return open_records().leases.holds(self.name, self.holder, self.seconds)

    def renewing(self) -> AbstractContextManager[None]:
        """Renew it from a thread while the block runs."""
        return open_records().leases.renewing(self.name, self.holder, self.seconds)

    def release(self) -> None:
        """Give it back, if this holder still has it."""
        open_records().leases.release(self.name, self.holder)


@task(cache_policy=NONE, timeout_seconds=60)
def read_incident(incident: str) -> Incident:
    """One incident by id or number."""
    return open_records().incidents.get(incident)


@task(cache_policy=NONE, timeout_seconds=60)
def claim_incident(incident: str, actor: str, holder: str) -> RestorationClaim:
    """Take an incident into this run's hands for a restoration, leased to `holder`.

    Claimed (In Progress if New, linked to the run) only if it is New or In Progress and
    no other live restoration holds its lease; otherwise returned as it is, untouched.
    """
    return open_records().leases.claim_restoration(
        incident, holder, get_settings().lease_seconds, actor, current_flow_run_id()
    )


@task(cache_policy=NONE, timeout_seconds=60)
def change_incident(incident_id: int, update: IncidentUpdate, actor: str) -> Incident:
    """Apply a state or field change through the lifecycle rules, audited with this run."""
    return open_records().incidents.update(
        incident_id, update, actor=actor, now=datetime.now(UTC), flow_run_id=current_flow_run_id()
    )


@task(cache_policy=NONE, timeout_seconds=60)
def write_worklog(incident_id: int, author: str, text: str) -> None:
    """Add a line to the incident's worklog."""
    open_records().worklog.add(incident_id, author, text, datetime.now(UTC))


@task(cache_policy=NONE, timeout_seconds=60)
def spend_remediation(service: str, host: str, incident_id: int, budget: int) -> int | None:
    """Count one automatic remediation against the service's hourly budget, if it allows;
    the hour's count with it, or None when the budget is spent."""
    now = datetime.now(UTC)
    return open_records().remediations.spend(
        service, host, incident_id, budget, since=now - timedelta(hours=1), at=now
    )


def link_to_recent_releases(
    incident_ids: list[int], window_minutes: float, actor: str
) -> list[tuple[str, str]]:
    """Link each incident to the release of its service that started before it and ended
    (or was still rolling out) within `window_minutes` of its opening: the incident's
    worklog and the release record both say so. Returns (incident, release) numbers linked.

    One query finds the releases recent enough to matter; without any (the usual case, and a
    storm's) no incident is even read.
    """
    if window_minutes <= 0 or not incident_ids:
        return []
    records = open_records()
    window = timedelta(minutes=window_minutes)
    candidates = records.releases.recent(datetime.now(UTC) - window - timedelta(minutes=5))
    linked: list[tuple[str, str]] = []
    for incident_id in incident_ids if candidates else []:
        incident = records.incidents.get(incident_id)
        if incident.service is None:
            continue
        release = release_before(candidates, incident.service, incident.opened_at, window)
        if release is None or incident.number in release.incidents:
            continue
        ended = "still rolling out"
        if release.finished_at is not None:
            ended = f"{release.state} at {release.finished_at:%H:%M:%S}"
        note = (
            f"opened after release {release.number} ({release.service} "
            f"{release.from_version or '?'} -> {release.to_version}, started "
            f"{release.started_at:%H:%M:%S}, {ended}): possibly caused by that change"
        )
        now = datetime.now(UTC)
        records.worklog.add(incident.id, actor, note, now)
        records.releases.link_incident(release.id, incident.number, actor, now)
        linked.append((incident.number, release.number))
    return linked
