"""Events triage could not handle, for operators: what arrived and why it failed.

Mounted by `create_app` beside the intake routes; operators read it (`opsflow event list
--failed`) to see alerts that opened no incident because triage could not place them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from desk.auth import require
from inventory.models import Person
from itsm.records import FailedEvent

router = APIRouter(prefix="/api/v1", tags=["events"])

Operator = Annotated[Person, Depends(require("operator"))]


@router.get("/events/failed")
def failed_events(
    request: Request,
    person: Operator,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FailedEvent]:
    """Events triage marked failed, newest first, each with its reason."""
    return request.app.state.store.failed_events(limit)
