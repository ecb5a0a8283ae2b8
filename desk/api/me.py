"""`/me`: the person a token belongs to, and what they have asked the desk for."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from opsflow.desk.api.incidents import as_seen_by
from opsflow.desk.deps import Grants, Reader, Records, Requests
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.records import Incident
from opsflow.itsm.requests import ServiceRequest

router = APIRouter(prefix="/api/v1", tags=["desk"])


class MyTickets(BaseModel):
    """A person and what they have asked the desk for (incidents as `Incident.reporter_view`
    shows them to anyone but operators)."""

    name: str
    full_name: str
    roles: list[str]
    team: str | None
    incidents: list[Incident]
    requests: list[ServiceRequest]
    access_grants: list[AccessGrant]


@router.get("/me")
def me(person: Reader, store: Records, requests: Requests, grants: Grants) -> MyTickets:
    """Who the token belongs to, and the incidents, requests and access they asked for."""
    return MyTickets(
        name=person.name,
        full_name=person.full_name,
        roles=list(person.roles),
        team=person.team,
        incidents=[
            as_seen_by(i, person) for i in store.incidents.list(reported_by=person.name, limit=200)
        ],
        requests=requests.list(requester=person.name, limit=200),
        access_grants=grants.list(requester=person.name, limit=200),
    )
