"""The desk's releases: recording one directly (operators), planning one, following them.

An operator's release is recorded approved by that operator (their role is the authority; a
release that needs someone else's approval goes through the catalog's deploy-release item)
and answered at once (201); a worker is woken to roll it out (`roll-out-release`), in a
thread of that worker (`desk.runners.releases`). A plan reads each host's release and says
what a rollout would change, batch by batch, recording nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status

from opsflow.desk.api.schema import Limit, States
from opsflow.desk.deps import CurrentEstate, Operator, Reader, Releases, Wake, sees_everything
from opsflow.errors import OpsError
from opsflow.flows.application_deploy import RolloutPlan, deploy_release
from opsflow.itsm.records import AuditEntry
from opsflow.itsm.releases import Release, ReleaseCreate
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.releases import Releases as ReleaseRecords

router = APIRouter(prefix="/api/v1", tags=["releases"])


class ReleaseDetail(Release):
    """A release with its audit trail."""

    audit: list[AuditEntry]


def _detail(releases: ReleaseRecords, id_or_number: str | int) -> ReleaseDetail:
    record = releases.get(id_or_number)
    return ReleaseDetail(**record.model_dump(), audit=releases.audit_trail(record.id))


def _check_service(body: ReleaseCreate, estate: CurrentEstate) -> None:
    """422 naming the field when the estate has no such service or it runs nowhere."""
    try:
        service = estate.service(body.service)
    except KeyError:
        problem = f"no service {body.service!r} in the estate"
    else:
        if estate.hosts_of(service):
            return
        problem = f"service {body.service!r} runs on no host"
    detail = [{"loc": ["body", "service"], "msg": problem, "type": "invalid_release"}]
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


@router.post("/releases", status_code=status.HTTP_201_CREATED)
def record_release(
    body: ReleaseCreate, person: Operator, estate: CurrentEstate, releases: Releases, wake: Wake
) -> ReleaseDetail:
    """Roll a version of a service out (operators): recorded approved by you, rolled out by
    a worker at once; follow it with GET /releases/{id}."""
    _check_service(body, estate)
    record = releases.create(
        body.service,
        body.version,
        requester=person.name,
        approver=person.name,
        actor=person.name,
        now=datetime.now(UTC),
        batch=body.batch,
        canary=body.canary,
        pause_s=body.pause_s,
    )
    wake.release_recorded()
    return _detail(releases, record.id)


@router.post("/releases/plan")
def plan_release(body: ReleaseCreate, person: Operator, estate: CurrentEstate) -> RolloutPlan:
    """What rolling this version out would do, host by host and batch by batch (operators);
    reads every host of the service, changes and records nothing."""
    _check_service(body, estate)
    try:
        return deploy_release(
            service=body.service,
            version=body.version,
            batch=body.batch,
            canary=body.canary,
            pause_s=body.pause_s,
            dry_run=True,
        )
    except OpsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"cannot plan: {exc}") from None


@router.get("/releases")
def list_releases(
    person: Reader,
    releases: Releases,
    state: States = None,
    service: str | None = None,
    limit: Limit = 100,
) -> list[Release]:
    """Releases, newest first, filtered by state or service.

    Operators see every release; others those they asked for or approved.
    """
    return releases.list(
        state=state,
        service=service,
        limit=limit,
        visible_to=None if sees_everything(person) else person.name,
    )


@router.get("/releases/{release_id}")
def show_release(release_id: str, person: Reader, releases: Releases) -> ReleaseDetail:
    """One release by id or number (REL0000001): each host's step, outcome, rollback, audit
    trail (404 if it is not yours to read)."""
    record = releases.get(release_id)
    if not (sees_everything(person) or person.name in (record.requester, record.approver)):
        raise RecordNotFoundError("release", release_id)
    return _detail(releases, record.id)
