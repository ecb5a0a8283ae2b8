"""The service desk's HTTP API: event intake, incidents, health and metrics.

Intake answers 202 only once events are committed to the store; triage runs afterwards,
over micro-batches, started through the `on_events` callback.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from opsflow.desk.api_access import router as access_router
from opsflow.desk.api_events import router as events_router
from opsflow.desk.api_problems import router as problems_router
from opsflow.desk.api_requests import router as requests_router
from opsflow.desk.api_schema import ERROR_RESPONSES, Offset
from opsflow.desk.auth import (
    Operator,
    Reader,
    header_person,
    optional_person,
    require,
    sees_everything,
)
from opsflow.desk.dispatch import triage_health
from opsflow.desk.estate import EstateCache, EstateUnavailableError
from opsflow.desk.group_commit import (
    RETRY_AFTER_S,
    GroupCommit,
    IntakeBusyError,
    IntakeStoreError,
)
from opsflow.desk.intake import (
    GENERIC_BODY,
    AlertmanagerWebhook,
    BodyRefusedError,
    Delivery,
    Rejected,
    field_errors,
    read_alertmanager,
    read_generic,
)
from opsflow.desk.metrics import render_metrics
from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import Person
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.records import (
    Incident,
    IncidentReport,
    IncidentUpdate,
    WorklogEntry,
)
from opsflow.itsm.requests import ServiceRequest
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.records import Records
from opsflow.itsm.triage import report_incident as classify_report

logger = logging.getLogger("opsflow.desk.intake")

WEB_PAGE = Path(__file__).with_name("web") / "index.html"
MAX_BODY_BYTES = 8 * 1024 * 1024
"""Larger bodies are refused (413) as soon as they are seen: a webhook of 10,000 alerts fits."""
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class BodyLimit:
    """Refuse bodies larger than MAX_BODY_BYTES (413) without reading them whole.

    A declared Content-Length is checked before anything is read; a chunked body has none,
    so its bytes are counted as the app receives them and the request is refused as soon as
    they pass the limit. A plain ASGI middleware: `@app.middleware("http")` (Starlette's
    BaseHTTPMiddleware) wraps every request in a task group and a memory stream, ~20% of
    the intake's CPU.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                response = JSONResponse(
                    {"detail": f"body larger than {MAX_BODY_BYTES} bytes"},
                    status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                )
                await response(scope, receive, send)
                return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                # Starlette's HTTPException: FastAPI lets it through its body parsing as is.
                raise StarletteHTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE, f"body larger than {MAX_BODY_BYTES} bytes"
                )
            return message

        await self.app(scope, counted, send)


class SenderFirst:
    """Refuse (401) a request to the API that comes with a body but no known bearer token.

    FastAPI reads and parses a route's body before it resolves the route's dependencies,
    authentication included: without this, anyone could make the desk read and parse
    8 MiB. Roles are still checked by the routes; this only turns strangers away early.
    """

    def __init__(self, app: Any, estate: EstateCache) -> None:
        self.app = app
        self.estate = estate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in BODY_METHODS
            and scope["path"].startswith("/api/")
        ):
            headers = dict(scope["headers"])
            has_body = headers.get(b"content-length", b"0") != b"0" or (
                b"transfer-encoding" in headers
            )
            if has_body and not self._known(headers.get(b"authorization")):
                response = JSONResponse(
                    {"detail": "bearer token required (or unknown)"},
                    status_code=status.HTTP_401_UNAUTHORIZED,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _known(self, authorization: bytes | None) -> bool:
        try:
            estate = self.estate()
        except EstateUnavailableError:
            return True  # the route answers 503 itself
        value = authorization.decode("latin-1") if authorization else None
        return header_person(estate, value) is not None


Sender = Annotated[Person, Depends(require("monitor", "operator"))]


class Accepted(BaseModel):
    """The answer to an event delivery: what was stored, what repeated, what was refused."""

    accepted: int = Field(description="Alerts or events that were valid (stored or repeats).")
    stored: int = Field(description="Of those, how many were new.")
    duplicates: int = Field(description="Of those, how many were already stored.")
    rejected: list[Rejected] = Field(
        default_factory=list, description="Items not stored, with the field at fault."
    )


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


class ServiceSummary(BaseModel):
    """A service as people see it: its name, what it is, where it runs."""

    name: str
    description: str
    hosts: list[str]


class IncidentDetail(Incident):
    """An incident with its worklog and whether its SLA targets are breached now.

    Anyone but an operator reads the reporter's view: the fields `Incident.reporter_view`
    empties are null and the worklog holds only their own entries (their reports).
    """

    worklog: list[WorklogEntry]
    sla_breached: dict[str, bool]


def create_app(
    store: Records,
    estate: EstateCache,
    on_events: Callable[[], None] = lambda: None,
    lifespan: Any = None,
    on_incident_change: Callable[[Incident, str], None] = lambda incident, change: None,
    max_waiting_events: int = 50_000,
) -> FastAPI:
    """The desk API over `store`, authenticating against `estate()`'s people.

    `on_events` is told when new events are stored; `on_incident_change` when a person
    opens or changes an incident (the server publishes both to Prefect). Past
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
    app.state.on_events = on_events
    app.state.estate = estate
    app.include_router(requests_router)
    app.include_router(access_router)
    app.include_router(problems_router)
    app.include_router(events_router)

    app.add_middleware(BodyLimit)
    app.add_middleware(SenderFirst, estate=estate)

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

    intake = GroupCommit(store, max_waiting=max_waiting_events)
    rejected_total: Counter[str] = Counter()

    async def accept(delivery: Delivery, source: str, sender: Person) -> Accepted:
        stored, duplicates = await intake.store(delivery.events) if delivery.events else (0, 0)
        if stored:
            on_events()
        rejected = delivery.rejected()
        if rejected:
            rejected_total[source] += len(rejected)
            logger.warning(
                "%s sent %d %s item(s) that were not stored: %r",
                sender.name,
                len(rejected),
                source,
                [r.reason for r in rejected[:20]],
            )
        return Accepted(
            accepted=len(delivery.events),
            stored=stored,
            duplicates=duplicates,
            rejected=rejected,
        )

    @app.post(
        "/api/v1/events/alertmanager",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["events"],
        summary="Alertmanager webhook (format 4)",
        openapi_extra=_json_body(AlertmanagerWebhook.model_json_schema()),
        responses=INTAKE_RESPONSES,
    )
    async def receive_alertmanager(request: Request, sender: Sender) -> Accepted:
        """Store every valid alert of the webhook and name the others; a repeat stores nothing.

        The body is read only once the sender is known. 422 only when no alert is usable.
        """
        return await accept(read_alertmanager(await request.body()), "alertmanager", sender)

    @app.post(
        "/api/v1/events",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["events"],
        summary="Generic events",
        openapi_extra=_json_body(GENERIC_BODY.json_schema()),
        responses=INTAKE_RESPONSES,
    )
    async def receive_events(request: Request, sender: Sender) -> Accepted:
        """Store one generic event or each valid one of a list, naming the others."""
        delivery = read_generic(await request.body(), datetime.now(UTC))
        return await accept(delivery, "generic", sender)

    @app.get("/api/v1/incidents", tags=["incidents"])
    def list_incidents(
        person: Reader,
        state: Annotated[list[str] | None, Query()] = None,
        host: str | None = None,
        service: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> list[Incident]:
        """Incidents, newest first, filtered by state, host or service (operators: all of
        them; anyone else: those they reported, in the reporter's view)."""
        found = store.incidents.list(
            state=state,
            host=host,
            service=service,
            limit=limit,
            offset=offset,
            reported_by=None if sees_everything(person) else person.name,
        )
        return [_view(i, person) for i in found]

    @app.post("/api/v1/incidents", tags=["incidents"], status_code=status.HTTP_201_CREATED)
    def report_incident(body: IncidentReport, person: Reader) -> Incident:
        """Report an incident on a CI; one already open for the same CI and symptom is returned,
        with the report recorded on it. Classification sets the key and priority (operators'
        impact and urgency apply, others' are noted); no runbook starts from a report.
        Anyone but an operator gets the reporter's view of it."""
        assesses = sees_everything(person)
        found = classify_report(store, estate(), body, person.name, assesses, datetime.now(UTC))
        on_incident_change(found.incident, "opened" if found.outcome == "opened" else "updated")
        return _view(found.incident, person)

    @app.get("/api/v1/incidents/{incident_id}", tags=["incidents"])
    def show_incident(incident_id: str, person: Reader) -> IncidentDetail:
        """One incident by id or number (INC0000001), with its worklog and SLA state; 404
        for an incident someone else reported, unless an operator asks. Its reporters read
        the reporter's view: no automation's worklog, notes or assignee."""
        incident = store.incidents.get(incident_id)
        if not sees_everything(person) and not store.incidents.reported_by(
            incident.id, person.name
        ):
            raise RecordNotFoundError("incident", incident_id)
        return _detail(store, incident_id, person)

    @app.patch("/api/v1/incidents/{incident_id}", tags=["incidents"])
    def update_incident(incident_id: str, body: IncidentUpdate, person: Operator) -> IncidentDetail:
        """Change state, assignment or priority; illegal transitions are refused (409)."""
        incident = store.incidents.get(incident_id)
        after = store.incidents.update(incident.id, body, actor=person.name, now=datetime.now(UTC))
        if after.state != incident.state and after.state in ("Resolved", "Closed", "Canceled"):
            on_incident_change(after, after.state.lower())
        elif after.version != incident.version:
            on_incident_change(after, "updated")
        return _detail(store, incident_id, person)

    @app.get("/api/v1/me", tags=["desk"])
    def me(person: Reader) -> MyTickets:
        """Who the token belongs to, and the incidents, requests and access they asked for."""
        return MyTickets(
            name=person.name,
            full_name=person.full_name,
            roles=list(person.roles),
            team=person.team,
            incidents=[
                _view(i, person) for i in store.incidents.list(reported_by=person.name, limit=200)
            ],
            requests=store.requests.list(requester=person.name, limit=200),
            access_grants=store.access.list(requester=person.name, limit=200),
        )

    @app.get("/api/v1/services", tags=["desk"])
    def services(person: Reader) -> list[ServiceSummary]:
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
    def health(
        request: Request, person: Annotated[Person | None, Depends(optional_person)]
    ) -> dict[str, Any]:
        """Whether the desk can reach its store, triage keeps up and the estate loads
        ("degraded" otherwise). Anyone reads the status, counts and ages; why it is degraded
        (triage's last error, the store's error, the estate's problems) only operators, as
        it names hosts, users, files and people."""
        detailed = sees_everything(person)
        try:
            open_incidents = sum(store.incidents.count_open_by_priority().values())
            status_of = getattr(request.app.state, "dispatcher", None)
            triage = triage_health(
                store, status_of and status_of.status(), datetime.now(UTC), detailed=detailed
            )
        except OpsError as exc:
            detail = str(exc) if detailed else "the desk cannot read its store"
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from exc
        state = "degraded" if triage["degraded"] else "ok"
        return {
            "status": state,
            "open_incidents": open_incidents,
            "triage": triage,
        } | estate_health(estate, person)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["desk"])
    def metrics() -> str:
        """Prometheus text: events by class, open incidents by priority, time to restore."""
        return (
            render_metrics(store)
            + "\n".join([*estate.status().metrics(), *intake_metrics(intake, rejected_total)])
            + "\n"
        )

    return app


INTAKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Nothing in the body can be stored: each problem with its location",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
    503: {"description": "Too many events waiting, or no store or estate: retry after a while"},
}


def _retry_later(detail: str) -> JSONResponse:
    """503 with Retry-After: Alertmanager and opsflow's own senders retry it."""
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
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


def estate_health(estate: EstateCache, person: Person | None) -> dict[str, Any]:
    """The health fields about the estate: "degraded" while its files do not load, and why,
    to operators only (the problems name files, people and hosts).
    """
    status_now = estate.status()
    if not status_now.failing:
        return {}
    if sees_everything(person):
        return {"status": "degraded", "estate": status_now.detail()}
    return {"status": "degraded"}


def intake_metrics(intake: GroupCommit, rejected_total: Counter[str]) -> list[str]:
    """Prometheus text lines: items refused at intake by source, and events awaiting commit.

    Both are counted by each desk process, which the `process` label names: a scrape is
    answered by one of the processes serving the port, and without it their counters would
    take turns and look reset.
    """
    process = f'process="{os.getpid()}"'
    lines = [
        "# HELP opsflow_events_rejected_total Alerts and events refused at intake, by source.",
        "# TYPE opsflow_events_rejected_total counter",
    ]
    for source in ("alertmanager", "generic"):
        lines.append(
            f'opsflow_events_rejected_total{{source="{source}",{process}}} {rejected_total[source]}'
        )
    return [
        *lines,
        "# HELP opsflow_intake_waiting_events Events accepted and waiting for their commit.",
        "# TYPE opsflow_intake_waiting_events gauge",
        f"opsflow_intake_waiting_events{{{process}}} {intake.waiting}",
    ]


def _view(incident: Incident, person: Person) -> Incident:
    """The incident as `person` may read it: whole for operators, else the reporter's view."""
    return incident if sees_everything(person) else incident.reporter_view()


def _detail(store: Records, incident_id: str, person: Person) -> IncidentDetail:
    """The incident with its SLA state and the worklog `person` may read: all of it for
    operators, their own entries (their reports) for anyone else."""
    incident = store.incidents.get(incident_id)
    author = None if sees_everything(person) else person.name
    return IncidentDetail(
        **_view(incident, person).model_dump(),
        worklog=store.worklog.entries(incident.id, author=author),
        sla_breached=incident.sla_breaches(datetime.now(UTC)),
    )
