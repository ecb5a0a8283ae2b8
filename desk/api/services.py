"""`/services`: the estate's services and their hosts, to say what an incident is about."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from opsflow.desk.deps import CurrentEstate, Reader

router = APIRouter(prefix="/api/v1", tags=["desk"])


class ServiceSummary(BaseModel):
    """A service as people see it: its name, what it is, where it runs."""

    name: str
    description: str
    hosts: list[str]


@router.get("/services")
def services(person: Reader, estate: CurrentEstate) -> list[ServiceSummary]:
    """The estate's services and their hosts, to say what an incident is about."""
    return [
        ServiceSummary(
            name=s.name,
            description=s.description,
            hosts=[h.name for h in estate.hosts_of(s)],
        )
        for s in estate.services
    ]
