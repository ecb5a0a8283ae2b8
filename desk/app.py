"""The service desk's HTTP app, composed: its state, its routers, its guards, its error answers.

What each route does is in `desk.api` (one router per resource) and `desk.web`; who may ask
and where the records are, in `desk.deps`. Intake answers 202 only once events are committed
to the store; triage runs afterwards, over micro-batches, started through `on_events`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from opsflow.desk.access_log import AccessLog
from opsflow.desk.api import (
    access,
    approvals,
    events,
    incidents,
    me,
    problems,
    requests,
    services,
)
from opsflow.desk.api import status as desk_status
from opsflow.desk.api.events import Intake
from opsflow.desk.api.schema import ERROR_RESPONSES
from opsflow.desk.estate import EstateCache, EstateUnavailableError
from opsflow.desk.group_commit import RETRY_AFTER_S, IntakeBusyError, IntakeStoreError
from opsflow.desk.intake import BodyRefusedError, field_errors
from opsflow.desk.metrics import metrics_registry
from opsflow.desk.middleware import BodyLimit, SenderFirst
from opsflow.desk.web import page, status_view
from opsflow.errors import PermanentError
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.records import Incident
from opsflow.itsm.requests import ServiceRequest
from opsflow.itsm.store.records import Records
from opsflow.settings import get_settings

ROUTERS = (
    requests.router,
    access.router,
    approvals.router,
    problems.router,
    events.router,
    incidents.router,
    me.router,
    services.router,
    page.router,
    status_view.router,
    desk_status.router,
)
"""Every router of the desk, in the order the app mounts them."""


def create_app(
    store: Records,
    estate: EstateCache,
    on_events: Callable[[], None] = lambda: None,
    lifespan: Any = None,
    on_incident_change: Callable[[Incident, str], None] = lambda incident, change: None,
    max_waiting_events: int = 50_000,
    on_record_change: Callable[[ServiceRequest | AccessGrant, str], None] = (
        lambda record, change: None
    ),
) -> FastAPI:
    """The desk API over `store`, authenticating against `estate()`'s people.

    `on_events` is told when new events are stored; `on_incident_change` when a person
    opens or changes an incident; `on_record_change` when a person submits or decides a
    service request or access grant (the server publishes all three to Prefect). Past
    `max_waiting_events` events waiting for their commit, intake answers 503.
    """
    app = FastAPI(
        lifespan=lifespan,
        title="opsflow service desk",
        version="1",
        description="One point of contact for events, incidents, requests and access.",
        responses=ERROR_RESPONSES,
        # The desk exports its own metrics (/metrics) and no OpenTelemetry: FastAPI's check
        # for OpenTelemetry providers costs ~30 us of every request otherwise.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.store = store
    app.state.estate = estate
    app.state.on_events = on_events
    app.state.on_incident_change = on_incident_change
    app.state.on_record_change = on_record_change
    app.state.intake = Intake(store, max_waiting_events, on_events)
    app.state.metrics_registry = metrics_registry(store, estate)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimit)
    app.add_middleware(SenderFirst, estate=estate)
    app.add_middleware(AccessLog, enabled=get_settings().access_log)  # the outermost
    _answer_errors(app)
    return app


def _answer_errors(app: FastAPI) -> None:
    """The answers to the desk's own errors: the store's refusals 404 or 409, field problems
    422, a full intake or a missing estate or store 503 with Retry-After."""

    @app.exception_handler(PermanentError)
    async def refuse(request: Request, exc: PermanentError) -> JSONResponse:
        code = status.HTTP_404_NOT_FOUND if isinstance(exc, LookupError) else 409
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": field_errors(exc.errors())}, status_code=422)

    @app.exception_handler(BodyRefusedError)
    async def unusable(request: Request, exc: BodyRefusedError) -> JSONResponse:
        detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(IntakeBusyError)
    @app.exception_handler(EstateUnavailableError)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return _retry_later(str(exc))

    @app.exception_handler(IntakeStoreError)
    async def not_stored(request: Request, exc: IntakeStoreError) -> JSONResponse:
        return _retry_later("the events could not be stored (the desk's log says why)")


def _retry_later(detail: str) -> JSONResponse:
    """503 with Retry-After: Alertmanager and opsflow's own senders retry it."""
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
