"""Triage stored events and tell Prefect's event feed what happened to incidents."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NONE
from prefect.events import emit_event

from opsflow.inventory.models import Estate
from opsflow.itsm.records import Incident
from opsflow.itsm.store.records import open_records
from opsflow.itsm.triage import Decision, triage
from opsflow.tasks.records import current_flow_run_id


@task(cache_policy=NONE, timeout_seconds=300)
def triage_pending_events(estate: Estate, limit: int, max_bytes: int) -> list[Decision]:
    """Classify and correlate up to `limit` stored, untriaged events (and `max_bytes` of
    their labels, annotations and summaries), oldest first."""
    store = open_records()
    events = store.events.pending(limit, max_bytes)
    if not events:
        return []
    return triage(store, estate, events, datetime.now(UTC), current_flow_run_id())


def ci_resource(incident: Incident) -> dict[str, str]:
    """The Prefect event resource for an incident's CI (host and service)."""
    ci = f"{incident.service or '-'}@{incident.host or '-'}"
    return {
        "prefect.resource.id": f"opsflow.ci.{ci}",
        "prefect.resource.name": ci,
        "opsflow.host": incident.host or "",
        "opsflow.service": incident.service or "",
    }


def publish_incident_change(incident: Incident, change: str, events: int = 1) -> None:
    """Emit `opsflow.incident.<change>` on the CI, so the UI's event feed shows its history."""
    emit_event(
        event=f"opsflow.incident.{change}",
        resource=ci_resource(incident),
        related=[
            {
                "prefect.resource.id": f"opsflow.incident.{incident.number}",
                "prefect.resource.role": "incident",
                "prefect.resource.name": incident.number,
            }
        ],
        payload={
            "incident_id": incident.id,
            "number": incident.number,
            "state": incident.state,
            "priority": incident.priority,
            "symptom": incident.symptom,
            "runbook": incident.runbook,
            "events": events,
        },
    )


@task(cache_policy=NONE, timeout_seconds=60)
def emit_incident_event(incident_id: int, change: str, events: int = 1) -> None:
    """Task form of `publish_incident_change`, reading the incident as it is now."""
    publish_incident_change(open_records().incidents.get(str(incident_id)), change, events)


@task(cache_policy=NONE, timeout_seconds=120)
def emit_incident_events(changes: list[tuple[int, str, int]]) -> None:
    """Publish a triage batch's incident changes (id, change, events counted) in one task."""
    store = open_records()
    for incident_id, change, events in changes:
        publish_incident_change(store.incidents.get(str(incident_id)), change, events)
