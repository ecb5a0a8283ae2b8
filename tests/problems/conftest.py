"""A real SQLite store with problem tables, and a desk app (`api`) with the problems API mounted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opsflow.desk.api.problems import router
from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.itsm.records import Incident, IncidentCreate, IncidentUpdate
from opsflow.itsm.store.records import Records
from tests.desk.conftest import desk_estate  # noqa: F401  (the small written estate)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(records_url: str) -> Records:
    return Records(records_url)


def problems_desk(store: Records, estate_dir: Path) -> TestClient:
    """The desk app over `store` with the problems API, mounted here unless `create_app` does."""
    app = create_app(store, EstateCache(estate_dir))
    if not any(getattr(route, "path", None) == "/api/v1/known-errors" for route in app.routes):
        app.include_router(router)
    return TestClient(app)


@pytest.fixture
def api(store: Records, desk_estate: Path) -> TestClient:  # noqa: F811
    return problems_desk(store, desk_estate)


def failure(
    store: Records,
    host: str = "web1",
    service: str = "app",
    symptom: str = "service-down",
    at: datetime = NOW,
    resolve_after: timedelta | None = timedelta(minutes=5),
) -> Incident:
    """One incident of `symptom` on `service`, resolved after `resolve_after` (None: left open)."""
    incident, created = store.correlation.open_or_correlate(
        IncidentCreate(
            host=host,
            service=service,
            symptom=symptom,
            summary=f"{symptom} of {service} on {host}",
            impact=2,
            urgency=1,
            correlation_key=f"{host}/{service}/{symptom}/{at.isoformat()}",
        ),
        at,
        actor="test",
    )
    assert created
    if resolve_after is not None:
        store.incidents.update(
            incident.id,
            IncidentUpdate(state="Resolved", resolution_code="auto-remediated"),
            "test",
            at + resolve_after,
        )
    return store.incidents.get(incident.id)
