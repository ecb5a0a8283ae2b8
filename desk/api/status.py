"""How the desk is doing: `/api/v1/health` for people and probes, `/metrics` for Prometheus.

Anyone reads both: the health's status, counts and ages, and the metrics. Why the desk is
degraded (triage's last error, the store's error, the estate's problems) only operators
read, as it names hosts, users, files and people.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opsflow.desk.deps import EstateFiles, Records, optional_person, sees_everything
from opsflow.desk.estate import EstateCache
from opsflow.desk.runners.dispatch import triage_health
from opsflow.errors import OpsError
from opsflow.inventory.models import Person

router = APIRouter(tags=["desk"])


@router.get("/api/v1/health")
def health(
    request: Request,
    person: Annotated[Person | None, Depends(optional_person)],
    store: Records,
    estate: EstateFiles,
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


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text: the records' backlog, failures, incidents, SLA breaches and
    approvals, and what the desk's processes counted (`desk.metrics`)."""
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


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
