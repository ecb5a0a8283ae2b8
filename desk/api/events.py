"""Events: intake (Alertmanager webhooks and generic events), and those triage could not handle.

Intake answers 202 only once events are committed to the store, item by item: the valid ones
are stored and the others named; triage runs afterwards, over micro-batches, started through
the app's `on_events` callback. Operators read the events triage marked failed (`opsflow
event failed`) to see alerts that opened no incident because triage could not place them,
and put them back before triage once the cause is mended (`opsflow event retry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, status
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, Field

from opsflow.desk.api.schema import Limit
from opsflow.desk.deps import Operator, Records, Sender
from opsflow.desk.group_commit import GroupCommit
from opsflow.desk.intake import (
    GENERIC_BODY,
    AlertmanagerWebhook,
    Delivery,
    Rejected,
    read_alertmanager,
    read_generic,
)
from opsflow.desk.metrics import EVENTS_REJECTED
from opsflow.inventory.models import Person
from opsflow.itsm.numbering import MAX_RECORD_ID
from opsflow.itsm.records import FailedEvent

logger = logging.getLogger("opsflow.desk.intake")

router = APIRouter(prefix="/api/v1", tags=["events"])


class Accepted(BaseModel):
    """The answer to an event delivery: what was stored, what repeated, what was refused."""

    accepted: int = Field(description="Alerts or events that were valid (stored or repeats).")
    stored: int = Field(description="Of those, how many were new.")
    duplicates: int = Field(description="Of those, how many were already stored.")
    rejected: list[Rejected] = Field(
        default_factory=list, description="Items not stored, with the field at fault."
    )


class Intake:
    """One app's intake: the group commit that stores events; items refused are counted by
    source in `desk.metrics`.

    Args:
        store: the records store events go to.
        max_waiting: events waiting for their commit past which intake answers 503.
        on_events: told when new events are stored (the desk wakes triage).
    """

    def __init__(self, store: Records, max_waiting: int, on_events: Callable[[], None]) -> None:
        self.commit = GroupCommit(store, max_waiting=max_waiting)
        self.on_events = on_events

    async def accept(self, delivery: Delivery, source: str, sender: Person) -> Accepted:
        """Store the delivery's valid events, tell the app when some are new, log the rest."""
        events = delivery.events
        stored, duplicates = await self.commit.store(events) if events else (0, 0)
        if stored:
            self.on_events()
        rejected = delivery.rejected()
        if rejected:
            EVENTS_REJECTED.labels(source=source).inc(len(rejected))
            logger.warning(
                "%s sent %d %s item(s) that were not stored: %r",
                sender.name,
                len(rejected),
                source,
                [r.reason for r in rejected[:20]],
            )
        return Accepted(
            accepted=len(events), stored=stored, duplicates=duplicates, rejected=rejected
        )


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI request body for a route that reads its own body, with `$defs` inlined."""
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    body = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": body}}


INTAKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Nothing in the body can be stored: each problem with its location",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
    503: {"description": "Too many events waiting, or no store or estate: retry after a while"},
}


def _intake_route(
    path: str, summary: str, body: dict[str, Any]
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """Route an intake: it reads its own `body` (JSON Schema) and answers 202 or an intake
    refusal (`INTAKE_RESPONSES`)."""
    return router.post(
        path,
        status_code=status.HTTP_202_ACCEPTED,
        summary=summary,
        openapi_extra=_json_body(body),
        responses=INTAKE_RESPONSES,
    )


@_intake_route(
    "/events/alertmanager",
    "Alertmanager webhook (format 4)",
    AlertmanagerWebhook.model_json_schema(),
)
async def receive_alertmanager(request: Request, sender: Sender) -> Accepted:
    """Store every valid alert of the webhook and name the others; a repeat stores nothing.

    The body is read only once the sender is known. 422 only when no alert is usable.
    """
    delivery = read_alertmanager(await request.body())
    return await request.app.state.intake.accept(delivery, "alertmanager", sender)


@_intake_route("/events", "Generic events", GENERIC_BODY.json_schema())
async def receive_events(request: Request, sender: Sender) -> Accepted:
    """Store one generic event or each valid one of a list, naming the others."""
    delivery = read_generic(await request.body(), datetime.now(UTC))
    return await request.app.state.intake.accept(delivery, "generic", sender)


@router.get("/events/failed")
def failed_events(
    person: Operator,
    store: Records,
    limit: Limit = 100,
) -> list[FailedEvent]:
    """Events triage marked failed, newest first, each with its reason."""
    return store.events.failed(limit)


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
def retry_failed_events(
    request: Request, person: Operator, store: Records, body: RetryFailed
) -> Retried:
    """Triage failed events again, once what made them fail is mended; audited."""
    ids = store.events.retry_failed(body.ids, datetime.now(UTC), person.name)
    if ids:
        request.app.state.on_events()
    return Retried(retried=ids)
