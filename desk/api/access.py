"""The desk's access management API: request, approve or reject, list, revoke, review.

Approval checks the approver against the entitlement (never the requester), records the
decision and wakes a worker (`provision-access`), which puts the access in place with the
`grant-access` flow in one of its threads (`desk.runners.access_changes`: a flow run starts at once
instead of waiting for a runner to poll); the desk answers 202 with the grant and
`GET /access-grants/{id}` shows it become active. Revocation is recorded, with who asked,
before any host is touched, and carried out by a worker the same way; the worker that put a
grant in place expires it at its end, and the minute-by-minute `expire-access` deployment
finishes whatever a dead worker left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict

from opsflow.desk.api.schema import Limit, Offset, RecordId, States
from opsflow.desk.deps import (
    CurrentEstate,
    Grants,
    Operator,
    Publish,
    Reader,
    Wake,
    may_read,
    sees_everything,
)
from opsflow.errors import OpsError
from opsflow.inventory.models import Entitlement, Estate, Person
from opsflow.itsm.access import (
    AccessDecision,
    AccessGrant,
    AccessNotEntitledError,
    AccessRequestCreate,
    AccessRequestInvalidError,
    resolve_request,
)
from opsflow.itsm.approvals import (
    ApprovalRefusedError,
    approvable_entitlements,
    check_approver,
)
from opsflow.itsm.store.access import AccessGrants
from opsflow.itsm.store.errors import RecordNotFoundError

logger = logging.getLogger("opsflow.desk.access")

router = APIRouter(prefix="/api/v1", tags=["access"])


@contextmanager
def _refusals() -> Iterator[None]:
    """Refused requests and decisions as HTTP answers: 403 not allowed, 422 does not fit."""
    try:
        yield
    except (AccessNotEntitledError, ApprovalRefusedError) as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except AccessRequestInvalidError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def _entitlement(estate: Estate, grant: AccessGrant) -> Entitlement:
    try:
        return estate.entitlement(grant.entitlement)
    except KeyError:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"entitlement {grant.entitlement!r} of access grant {grant.id} is no longer in the "
            "estate: nobody can approve or reject it",
        ) from None


def _visible(grants: AccessGrants, grant_id: int, estate: Estate, person: Person) -> AccessGrant:
    """The grant if `person` may see it (theirs, one they may approve, or an operator);
    otherwise 404, exactly as if there were none."""
    grant = grants.get(grant_id)
    approvable = approvable_entitlements(estate, person)
    if may_read(person, grant.requester, grant.entitlement, approvable):
        return grant
    raise RecordNotFoundError("access_grant", grant_id)


def _what(grant: AccessGrant) -> str:
    """A grant as approval messages name it: "#12 (web-login for carol)"."""
    return f"#{grant.id} ({grant.entitlement} for {grant.username})"


class ReviewRequest(BaseModel):
    """Whether the review removes what no grant explains, or only reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enforce: bool = False


@router.post("/access-requests", status_code=status.HTTP_201_CREATED)
def request_access(
    body: AccessRequestCreate,
    person: Reader,
    estate: CurrentEstate,
    grants: Grants,
    publish: Publish,
) -> AccessGrant:
    """Ask for an entitlement for yourself; it waits for an approver (state requested)."""
    with _refusals():
        resolved = resolve_request(estate, person, body)
        grant = grants.request(resolved, person.name, datetime.now(UTC))
    publish(grant, "submitted")
    return grant


@router.post("/access-requests/{grant_id}/approve", status_code=status.HTTP_202_ACCEPTED)
def approve_access(
    grant_id: RecordId,
    person: Reader,
    estate: CurrentEstate,
    grants: Grants,
    wake: Wake,
    publish: Publish,
    body: AccessDecision | None = None,
) -> AccessGrant:
    """Approve a request (not your own; the entitlement names who may) and start the grant."""
    approved = _decide(grants, grant_id, estate, person, True, body)
    publish(approved, "approved")
    wake.access_changed()
    return approved


@router.post("/access-requests/{grant_id}/reject")
def reject_access(
    grant_id: RecordId,
    person: Reader,
    estate: CurrentEstate,
    grants: Grants,
    publish: Publish,
    body: AccessDecision | None = None,
) -> AccessGrant:
    """Deny a request (not your own; the entitlement names who may)."""
    denied = _decide(grants, grant_id, estate, person, False, body)
    publish(denied, "rejected")
    return denied


def _decide(
    grants: AccessGrants,
    grant_id: int,
    estate: Estate,
    person: Person,
    approve: bool,
    body: AccessDecision | None,
) -> AccessGrant:
    """Record `person`'s decision on a request they may see, once the entitlement names them
    an approver (never the requester)."""
    grant = _visible(grants, grant_id, estate, person)
    entitlement = _entitlement(estate, grant)
    with _refusals():
        check_approver(person, grant.requester, entitlement.approvers, _what(grant))
    comment = (body or AccessDecision()).comment
    return grants.decide(grant_id, approve, person.name, comment, datetime.now(UTC))


@router.get("/access-grants")
def list_access_grants(
    person: Reader,
    estate: CurrentEstate,
    grants: Grants,
    state: States = None,
    requester: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[AccessGrant]:
    """Access grants, newest first, filtered by state or requester.

    Operators see every grant; others their own and those they may approve.
    """
    everything = sees_everything(person)
    return grants.list(
        state=state,
        requester=requester,
        limit=limit,
        offset=offset,
        visible_to=None if everything else person.name,
        entitlements=() if everything else approvable_entitlements(estate, person),
    )


@router.get("/access-grants/{grant_id}")
def show_access_grant(
    grant_id: RecordId, person: Reader, estate: CurrentEstate, grants: Grants
) -> AccessGrant:
    """One access grant: its state, hosts, end, and the last error if a run failed (404 if
    it is neither yours nor one you may approve)."""
    return _visible(grants, grant_id, estate, person)


@router.delete("/access-grants/{grant_id}", status_code=status.HTTP_202_ACCEPTED)
def revoke_access_grant(
    grant_id: RecordId,
    person: Reader,
    estate: CurrentEstate,
    grants: Grants,
    wake: Wake,
    publish: Publish,
) -> AccessGrant:
    """Revoke a grant (its requester, its approvers, operators: 404 for anyone else, who may
    not see it); a pending request is withdrawn.

    The revocation is recorded at once and carried out on the hosts by a worker.
    """
    grant = _visible(grants, grant_id, estate, person)
    now = datetime.now(UTC)
    if grant.state == "requested":
        withdrawn = grants.decide(grant_id, False, person.name, "withdrawn", now)
        publish(withdrawn, "withdrawn")
        return withdrawn
    marked = grants.request_revoke(grant_id, person.name, now)
    wake.access_changed()
    return marked


@router.post("/access-reviews")
def review_access_now(body: ReviewRequest, person: Operator) -> list[dict[str, Any]]:
    """Compare every host with the live grants now; `enforce` removes what none explains."""
    from opsflow.flows.access_provisioning import review_access

    try:
        return review_access(enforce=body.enforce)
    except OpsError as exc:  # some host could not be read; the run's artifact has the rest
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
