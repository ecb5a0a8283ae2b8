"""Events triage could not handle, for operators: what arrived and why it failed.

Mounted by `create_app` beside the intake routes; operators read it (`opsflow event failed`)
to see alerts that opened no incident because triage could not place them, and put them back
before triage once the cause is mended (`opsflow event retry`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from opsflow.desk.auth import Operator
from opsflow.itsm.numbering import MAX_RECORD_ID
from opsflow.itsm.records import FailedEvent

router = APIRouter(prefix="/api/v1", tags=["events"])


@router.get("/events/failed")
def failed_events(
    request: Request,
    person: Operator,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FailedEvent]:
    """Events triage marked failed, newest first, each with its reason."""
    return request.app.state.store.events.failed(limit)


class RetryFailed(BaseModel):
    """Which failed events to triage again: the ids given, or every one when none are."""

    model_config = {"extra": "forbid"}

    ids: list[Annotated[int, Field(ge=1, le=MAX_RECORD_ID)]] | None = Field(
        default=None, max_length=10_000
    )


class Retried(BaseModel):
    """The failed events put back before triage."""

    retried: list[int]


@router.post("/events/failed/retry")
def retry_failed_events(request: Request, person: Operator, body: RetryFailed) -> Retried:
    """Triage failed events again, once what made them fail is mended; audited."""
    ids = request.app.state.store.events.retry_failed(body.ids, datetime.now(UTC), person.name)
    if ids:
        request.app.state.on_events()
    return Retried(retried=ids)
