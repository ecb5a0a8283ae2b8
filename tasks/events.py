"""Triage stored events, and tell Prefect's event feed what happened to incidents, service
requests and access grants.

Each event is on what the record is about (an incident's CI, a request's catalog item, a
grant's entitlement) with the record itself, and the people, as related resources: one
trigger can follow a service, an item or an entitlement, or one record. Payloads carry ids
(a trigger cannot render an event's own id) and nothing secret.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NONE
from prefect.events import emit_event

from opsflow.inventory.models import Estate
from opsflow.itsm.access import AccessGrant
from opsflow.itsm.records import Incident
from opsflow.itsm.requests import ServiceRequest
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


def _people(record: ServiceRequest | AccessGrant) -> list[dict[str, str]]:
    """The requester, and the approver once there is one, as related resources."""
    people = [("requester", record.requester), ("approver", record.approver)]
    return [
        {
            "prefect.resource.id": f"opsflow.person.{name}",
            "prefect.resource.role": role,
            "prefect.resource.name": name,
        }
        for role, name in people
        if name
    ]


def publish_request_change(record: ServiceRequest, change: str) -> None:
    """Emit `opsflow.request.<change>` (submitted, approved, rejected, fulfilled, failed, ...)
    on the request's catalog item, the request related by its number."""
    emit_event(
        event=f"opsflow.request.{change}",
        resource={
            "prefect.resource.id": f"opsflow.catalog-item.{record.item}",
            "prefect.resource.name": record.item,
        },
        related=[
            {
                "prefect.resource.id": f"opsflow.request.{record.number}",
                "prefect.resource.role": "request",
                "prefect.resource.name": record.number,
            },
            *_people(record),
        ],
        payload={
            "request_id": record.id,
            "number": record.number,
            "item": record.item,
            "state": record.state,
            "requester": record.requester,
            "approver": record.approver,
        },
    )


def publish_grant_change(grant: AccessGrant, change: str) -> None:
    """Emit `opsflow.access.<change>` (submitted, approved, rejected, withdrawn, granted,
    revoked, expired) on the grant's entitlement, the grant related by its id."""
    emit_event(
        event=f"opsflow.access.{change}",
        resource={
            "prefect.resource.id": f"opsflow.entitlement.{grant.entitlement}",
            "prefect.resource.name": grant.entitlement,
            "opsflow.host_group": grant.host_group,
            "opsflow.privilege": grant.privilege,
        },
        related=[
            {
                "prefect.resource.id": f"opsflow.access-grant.{grant.id}",
                "prefect.resource.role": "access-grant",
                "prefect.resource.name": f"#{grant.id}",
            },
            *_people(grant),
        ],
        payload={
            "grant_id": grant.id,
            "entitlement": grant.entitlement,
            "state": grant.state,
            "username": grant.username,
            "requester": grant.requester,
            "approver": grant.approver,
            "hosts": grant.hosts,
            "ends_at": grant.ends_at.isoformat() if grant.ends_at else None,
        },
    )


def publish_record_change(record: ServiceRequest | AccessGrant, change: str) -> None:
    """Emit the event of a service request's or an access grant's change."""
    if isinstance(record, ServiceRequest):
        publish_request_change(record, change)
    else:
        publish_grant_change(record, change)
