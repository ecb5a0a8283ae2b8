"""The service desk's HTTP API: event intake, incidents, health and metrics.

Intake answers 202 only once events are committed to the store; triage runs afterwards,
over micro-batches, started through the `on_events` callback.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError

from desk.api_access import router as access_router
from desk.api_problems import router as problems_router
from desk.api_requests import router as requests_router
from desk.api_schema import ERROR_RESPONSES, Offset
from desk.auth import current_person, require
from desk.group_commit import GroupCommit
from desk.intake import AlertmanagerWebhook, GenericEvent, from_alertmanager, from_generic
from desk.metrics import render_metrics
from inventory.models import Estate, Person
from itsm.access import AccessGrant
from itsm.access_store import AccessStore
from itsm.records import EventIn, Incident, IncidentCreate, IncidentUpdate, WorklogEntry
from itsm.request_store import RequestStore
from itsm.requests import ServiceRequest
from itsm.store import Store
from opsflow.errors import OpsError, PermanentError

WEB_PAGE = Path(__file__).with_name("web") / "index.html"
MAX_BODY_BYTES = 8 * 1024 * 1024
"""Larger bodies are refused before they are read: a webhook of 10,000 alerts fits."""


class BodyLimit:
    """Refuse bodies declared larger than MAX_BODY_BYTES (413) before reading them.

    A plain ASGI middleware: `@app.middleware("http")` (Starlette's BaseHTTPMiddleware)
    wraps every request in a task group and a memory stream, ~20% of the intake's CPU.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (
                    not value.isdigit() or int(value) > MAX_BODY_BYTES
                ):
                    response = JSONResponse(
                        {"detail": f"body larger than {MAX_BODY_BYTES} bytes"},
                        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


Sender = Annotated[Person, Depends(require("monitor", "operator"))]
Operator = Annotated[Person, Depends(require("operator"))]
Anyone = Annotated[Person, Depends(current_person)]


class Accepted(BaseModel):
    """The answer to an event delivery: how many were new and how many were repeats."""

    stored: int
    duplicates: int


class MyTickets(BaseModel):
    """A person and what they have asked the desk for."""

    name: str
    full_name: str
    roles: list[str]
    team: str | None
    incidents: list[Incident]
    requests: list[ServiceRequest]
    access_grants: list[AccessGrant]


class ServiceSummary(BaseModel):
    """A service as people see it: its name, what it is, where it runs."""

    name: str
    description: str
    hosts: list[str]


class IncidentDetail(Incident):
    """An incident with its worklog and whether its SLA targets are breached now."""

    worklog: list[WorklogEntry]
    sla_breached: dict[str, bool]


def create_app(
    store: Store,
    estate: Callable[[], Estate],
    on_events: Callable[[], None] = lambda: None,
    lifespan: Any = None,
    on_incident_change: Callable[[Incident, str], None] = lambda incident, change: None,
) -> FastAPI:
    """The desk API over `store`, authenticating against `estate()`'s people.

    `on_events` is told when new events are stored; `on_incident_change` when a person
    opens or changes an incident (the server publishes both to Prefect).
    """
    app = FastAPI(
        lifespan=lifespan,
        title="opsflow service desk",
        version="1",
        description="One point of contact for events, incidents, requests and access.",
        responses=ERROR_RESPONSES,
    )
    app.state.store = store
    app.state.estate = estate
    app.include_router(requests_router)
    app.include_router(access_router)
    app.include_router(problems_router)

    app.add_middleware(BodyLimit)

    @app.exception_handler(PermanentError)
    async def refuse(request: Request, exc: PermanentError) -> JSONResponse:
        code = status.HTTP_404_NOT_FOUND if isinstance(exc, LookupError) else 409
        return JSONResponse({"detail": str(exc)}, status_code=code)

    intake = GroupCommit(store)

    async def accept(convert: Callable[[], list[EventIn]]) -> Accepted:
        try:
            events = convert()
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        stored, duplicates = await intake.store(events)
        if stored:
            on_events()
        return Accepted(stored=stored, duplicates=duplicates)

    @app.post(
        "/api/v1/events/alertmanager",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["events"],
        summary="Alertmanager webhook (format 4)",
    )
    async def receive_alertmanager(webhook: AlertmanagerWebhook, sender: Sender) -> Accepted:
        """Store every alert of the webhook; a repeated delivery stores nothing new."""
        return await accept(lambda: from_alertmanager(webhook))

    @app.post(
        "/api/v1/events",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["events"],
        summary="Generic events",
    )
    async def receive_events(body: GenericEvent | list[GenericEvent], sender: Sender) -> Accepted:
        """Store one generic event or a list of them."""
        now = datetime.now(UTC)
        events = body if isinstance(body, list) else [body]
        return await accept(lambda: [from_generic(e, now) for e in events])

    @app.get("/api/v1/incidents", tags=["incidents"])
    def list_incidents(
        person: Anyone,
        state: Annotated[list[str] | None, Query()] = None,
        host: str | None = None,
        service: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> list[Incident]:
        """Incidents, newest first, filtered by state, host or service."""
        return store.list_incidents(
            state=state, host=host, service=service, limit=limit, offset=offset
        )

    @app.post("/api/v1/incidents", tags=["incidents"], status_code=status.HTTP_201_CREATED)
    def report_incident(body: IncidentCreate, person: Anyone) -> Incident:
        """Report an incident; one already open for the same CI and symptom is returned."""
        incident, created = store.open_or_correlate(body, datetime.now(UTC), actor=person.name)
        on_incident_change(incident, "opened" if created else "updated")
        return incident

    @app.get("/api/v1/incidents/{incident_id}", tags=["incidents"])
    def show_incident(incident_id: str, person: Anyone) -> IncidentDetail:
        """One incident by id or number (INC0000001), with its worklog and SLA state."""
        return _detail(store, incident_id)

    @app.patch("/api/v1/incidents/{incident_id}", tags=["incidents"])
    def update_incident(incident_id: str, body: IncidentUpdate, person: Operator) -> IncidentDetail:
        """Change state, assignment or priority; illegal transitions are refused (409)."""
        incident = store.get_incident(incident_id)
        after = store.update_incident(incident.id, body, actor=person.name, now=datetime.now(UTC))
        if after.state != incident.state and after.state in ("Resolved", "Closed", "Canceled"):
            on_incident_change(after, after.state.lower())
        elif after.version != incident.version:
            on_incident_change(after, "updated")
        return _detail(store, incident_id)

    @app.get("/api/v1/me", tags=["desk"])
    def me(person: Anyone) -> MyTickets:
        """Who the token belongs to, and the incidents, requests and access they asked for."""
        return MyTickets(
            name=person.name,
            full_name=person.full_name,
            roles=list(person.roles),
            team=person.team,
            incidents=store.list_incidents(reported_by=person.name, limit=200),
            requests=RequestStore(store).list(requester=person.name, limit=200),
            access_grants=AccessStore(store).list(requester=person.name, limit=200),
        )

    @app.get("/api/v1/services", tags=["desk"])
    def services(person: Anyone) -> list[ServiceSummary]:
        """The estate's services and their hosts, to say what an incident is about."""
        current = estate()
        return [
            ServiceSummary(
                name=s.name,
                description=s.description,
                hosts=[h.name for h in current.hosts_of(s)],
            )
            for s in current.services
        ]

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        """The desk's web page for people who are not engineers."""
        return HTMLResponse(WEB_PAGE.read_text())

    @app.get("/api/v1/health", tags=["desk"])
    def health() -> dict[str, Any]:
        """Whether the desk can reach its store."""
        try:
            open_incidents = sum(store.count_open_by_priority().values())
        except OpsError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return {"status": "ok", "open_incidents": open_incidents}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["desk"])
    def metrics() -> str:
        """Prometheus text: events by class, open incidents by priority, time to restore."""
        return render_metrics(store)

    return app


def _detail(store: Store, incident_id: str) -> IncidentDetail:
    incident = store.get_incident(incident_id)
    return IncidentDetail(
        **incident.model_dump(),
        worklog=store.worklog(incident.id),
        sla_breached=incident.sla_breaches(datetime.now(UTC)),
    )
