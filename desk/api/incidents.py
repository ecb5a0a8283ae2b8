"""Incidents through the desk: list, report, read and change them.

Operators read and change every incident; anyone else who reads the desk's records reads
the incidents they reported, in the reporter's view (`Incident.reporter_view`), and another
person's incident is answered 404, as if it did not exist. A person's report is classified
like an alert about the same CI and symptom (`itsm.triage.report_incident`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, status

from opsflow.desk.api.schema import Limit, Offset, States
from opsflow.desk.deps import CurrentEstate, Operator, Reader, Records, sees_everything
from opsflow.inventory.models import Person
from opsflow.itsm.records import Incident, IncidentReport, IncidentUpdate, WorklogEntry
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.triage import report_incident as classify_report

router = APIRouter(prefix="/api/v1", tags=["incidents"])


class IncidentDetail(Incident):
    """An incident with its worklog and whether its SLA targets are breached now.

    Anyone but an operator reads the reporter's view: the fields `Incident.reporter_view`
    empties are null and the worklog holds only their own entries (their reports).
    """

    worklog: list[WorklogEntry]
    sla_breached: dict[str, bool]


@router.get("/incidents")
def list_incidents(
    person: Reader,
    store: Records,
    state: States = None,
    host: str | None = None,
    service: str | None = None,
    limit: Limit = 100,
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
    return [as_seen_by(i, person) for i in found]


@router.post("/incidents", status_code=status.HTTP_201_CREATED)
def report_incident(
    body: IncidentReport, request: Request, person: Reader, estate: CurrentEstate, store: Records
) -> Incident:
    """Report an incident on a CI; one already open for the same CI and symptom is returned,
    with the report recorded on it. Classification sets the key and priority (operators'
    impact and urgency apply, others' are noted); no runbook starts from a report.
    Anyone but an operator gets the reporter's view of it."""
    assesses = sees_everything(person)
    found = classify_report(store, estate, body, person.name, assesses, datetime.now(UTC))
    change = "opened" if found.outcome == "opened" else "updated"
    request.app.state.on_incident_change(found.incident, change)
    return as_seen_by(found.incident, person)


@router.get("/incidents/{incident_id}")
def show_incident(incident_id: str, person: Reader, store: Records) -> IncidentDetail:
    """One incident by id or number (INC0000001), with its worklog and SLA state; 404
    for an incident someone else reported, unless an operator asks. Its reporters read
    the reporter's view: no automation's worklog, notes or assignee."""
    incident = store.incidents.get(incident_id)
    if not sees_everything(person) and not store.incidents.reported_by(incident.id, person.name):
        raise RecordNotFoundError("incident", incident_id)
    return _detail(store, incident_id, person)


@router.patch("/incidents/{incident_id}")
def update_incident(
    incident_id: str, body: IncidentUpdate, request: Request, person: Operator, store: Records
) -> IncidentDetail:
    """Change state, assignment or priority; illegal transitions are refused (409)."""
    incident = store.incidents.get(incident_id)
    after = store.incidents.update(incident.id, body, actor=person.name, now=datetime.now(UTC))
    on_incident_change = request.app.state.on_incident_change
    if after.state != incident.state and after.state in ("Resolved", "Closed", "Canceled"):
        on_incident_change(after, after.state.lower())
    elif after.version != incident.version:
        on_incident_change(after, "updated")
    return _detail(store, incident_id, person)


def as_seen_by(incident: Incident, person: Person) -> Incident:
    """The incident as `person` may read it: whole for operators, else the reporter's view."""
    return incident if sees_everything(person) else incident.reporter_view()


def _detail(store: Records, incident_id: str, person: Person) -> IncidentDetail:
    """The incident with its SLA state and the worklog `person` may read: all of it for
    operators, their own entries (their reports) for anyone else."""
    incident = store.incidents.get(incident_id)
    author = None if sees_everything(person) else person.name
    return IncidentDetail(
        **as_seen_by(incident, person).model_dump(),
        worklog=store.worklog.entries(incident.id, author=author),
        sla_breached=incident.sla_breaches(datetime.now(UTC)),
    )
