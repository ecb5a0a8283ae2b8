"""`/approvals`: what waits for the asker's decision, service requests and access grants.

Only what they may decide: requests for catalog items whose approvers admit them and grants
of entitlements whose approvers do, never their own (nobody approves their own request).
They decide through `POST /requests/{id}/approve|reject` and
`POST /access-requests/{id}/approve|reject`, which check the same rules again.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from opsflow.desk.api.schema import Limit
from opsflow.desk.deps import CurrentEstate, Grants, Reader, Requests
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.approvals import approvable_entitlements, approvable_items
from opsflow.itsm.requests import ServiceRequest

router = APIRouter(prefix="/api/v1", tags=["desk"])


class Approvals(BaseModel):
    """What waits for one person's decision, the longest waiting first."""

    requests: list[ServiceRequest]
    access_grants: list[AccessGrant]


@router.get("/approvals")
def waiting_for_me(
    person: Reader,
    estate: CurrentEstate,
    requests: Requests,
    grants: Grants,
    limit: Limit = 100,
) -> Approvals:
    """Service requests awaiting approval and access requested that the asker may decide
    (their own never), at most `limit` of each."""
    return Approvals(
        requests=requests.awaiting_decision(approvable_items(estate, person), person.name, limit),
        access_grants=grants.awaiting_decision(
            approvable_entitlements(estate, person), person.name, limit
        ),
    )
