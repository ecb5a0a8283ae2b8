"""Records and stand-ins tests make: incidents as triage would open them, a desk's silent
wake-ups."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from opsflow.itsm.records import Incident, IncidentCreate


class NoWorkers:
    """A desk's wake-ups (`app.state.wake_ups`) that reach no worker: the requests and grants
    it records stay as it recorded them."""

    def request_submitted(self) -> None:
        """A request was recorded; nobody is told."""

    def access_changed(self) -> None:
        """An access change was recorded; nobody is told."""


def open_service_down(host: str, summary: str) -> Incident:
    """A New service-down incident for app on `host`, with the restart-service runbook."""
    from opsflow.itsm.store.records import open_records

    incident, _ = open_records().correlation.open_or_correlate(
        IncidentCreate(
            host=host,
            service="app",
            symptom="service-down",
            summary=summary,
            impact=2,
            urgency=1,
            runbook="restart-service",
            assignment_group="ops",
            correlation_key=f"{host}/app/{uuid4().hex}",
        ),
        datetime.now(UTC),
        actor="test",
    )
    return incident
