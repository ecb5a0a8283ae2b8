"""The ITIL records opsflow keeps: events, incidents, worklog and audit entries.

These pydantic models are what the API, the CLI and the flows exchange with the store.
Datetimes are always timezone-aware and normalised to UTC.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from opsflow.itsm.numbering import NumberedRecord, Numbering
from opsflow.itsm.states import StateMachine

EventClass = Literal["informational", "warning", "exception"]
EventStatus = Literal["firing", "resolved"]
IncidentState = Literal["New", "In Progress", "On Hold", "Resolved", "Closed", "Canceled"]
ResolutionCode = Literal["auto-remediated", "manual", "no-fault", "workaround", "duplicate"]

INCIDENT_STATES: StateMachine[IncidentState] = StateMachine(
    "incident",
    {
        "New": ("In Progress", "On Hold", "Resolved", "Canceled"),
        "In Progress": ("On Hold", "Resolved", "Canceled"),
        "On Hold": ("In Progress", "Resolved", "Canceled"),
        "Resolved": ("Closed", "In Progress"),
        "Closed": (),
        "Canceled": (),
    },
)
"""The incident state machine; Resolved -> In Progress is a reopen, Closed and Canceled are
final."""

INCIDENT_NUMBERING = Numbering("INC")

REPORTER_HIDDEN = (
    "hold_reason",
    "assigned_to",
    "runbook",
    "problem_id",
    "known_error_id",
)
"""Incident fields emptied (null) in the reporter's view, with `flow_run_ids`."""

RUNBOOK_RESOLUTIONS = ("auto-remediated", "workaround")
"""Resolutions a runbook writes: their notes quote host output, so reporters don't see them."""

OPEN_STATES: tuple[IncidentState, ...] = ("New", "In Progress", "On Hold")
"""States in which an incident still needs work; at most one per correlation key."""

CLAIMABLE_STATES: tuple[IncidentState, ...] = ("New", "In Progress")
"""States in which a flow may take an incident on; On Hold means a human is holding it."""


def left_to_automation(incident: Incident) -> bool:
    """Whether a flow may take the incident on: in CLAIMABLE_STATES and assigned to nobody.

    Escalation leaves an incident In Progress and assigns its team's on-call: from then on
    a person owns it, and no restoration (a desk's takeover, a failure hook, a correlated
    alert) may run its runbook or page again.
    """
    return incident.state in CLAIMABLE_STATES and incident.assigned_to is None


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, converted to UTC; naive datetimes are refused."""

Impact = Annotated[int, Field(ge=1, le=3, description="1 (widespread) to 3 (one user or CI).")]
Urgency = Annotated[int, Field(ge=1, le=3, description="1 (now) to 3 (can wait).")]
Priority = Annotated[int, Field(ge=1, le=5, description="1 (critical) to 5 (planning).")]
CiName = Annotated[str, Field(min_length=1, max_length=255)]
ShortText = Annotated[str, Field(min_length=1, max_length=500)]
LongText = Annotated[str, Field(max_length=10_000)]


class _EventFields(BaseModel):
    """What an event says, as received."""

    source: str = Field(
        min_length=1, max_length=64, description='Who sent it: "alertmanager", "generic", …'
    )
    fingerprint: str = Field(
        min_length=1, max_length=128, description="The sender's stable id of the alert."
    )
    status: EventStatus
    host: CiName | None = None
    service: CiName | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    summary: str = Field(default="", max_length=1000)
    occurred_at: UtcDatetime = Field(description="When the condition started (startsAt).")
    ends_at: UtcDatetime | None = Field(
        default=None, description="When the condition ended (endsAt), for resolved events."
    )


class EventIn(_EventFields):
    """An event as intake stores it, built by the desk from Alertmanager or generic JSON.

    Unknown fields are ignored: this is the edge where outside payloads come in.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    def dedup_key(self) -> str:
        """A digest identifying this alert state, so a re-sent alert is stored once.

        Alertmanager re-sends a firing alert with the same fingerprint and startsAt until it
        resolves; the resolved notification adds endsAt.
        """
        parts = [self.source, self.fingerprint, self.status, self.occurred_at.isoformat()]
        if self.status == "resolved":
            parts.append(self.ends_at.isoformat() if self.ends_at else "")
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


EVENT_MAX_AGE = timedelta(days=30)
"""How far before its arrival an event's time may lie; older times are clamped to this."""

EVENT_MAX_SKEW = timedelta(minutes=5)
"""How far after its arrival an event's time may lie (the sender's clock running ahead)."""

ORIGINAL_TIME_ANNOTATION = "opsflow_original_times"
"""The annotation that keeps an event's times as sent when intake clamped them."""


def bound_event_times(event: EventIn, received_at: datetime) -> EventIn:
    """The event with its times inside [received_at - EVENT_MAX_AGE, received_at + EVENT_MAX_SKEW].

    A sender's clock or a hostile body can put `startsAt` anywhere from year 1 to 9999; such a
    time would push SLA due dates out of range and the incident's history out of order.
    Times outside the window are clamped to its nearest end (the end time never before the
    start) and the times as sent are kept in the `opsflow_original_times` annotation; an
    event inside the window is returned unchanged. The dedup key is the caller's to take
    from the event as received, so a re-sent alert is still recognised.
    """
    earliest, latest = received_at - EVENT_MAX_AGE, received_at + EVENT_MAX_SKEW
    occurred_at = min(max(event.occurred_at, earliest), latest)
    ends_at = event.ends_at
    if ends_at is not None:
        ends_at = min(max(ends_at, occurred_at), latest)
    if occurred_at == event.occurred_at and ends_at == event.ends_at:
        return event
    original = f"occurred_at={event.occurred_at.isoformat()}"
    if event.ends_at is not None:
        original += f" ends_at={event.ends_at.isoformat()}"
    return event.model_copy(
        update={
            "occurred_at": occurred_at,
            "ends_at": ends_at,
            "annotations": {**event.annotations, ORIGINAL_TIME_ANNOTATION: original},
        }
    )


class Event(_EventFields):
    """A stored event with the triage decision made about it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    dedup_key: str = Field(description="EventIn.dedup_key() of the event as received.")
    received_at: UtcDatetime
    event_class: EventClass | None = None
    rule: str | None = Field(default=None, description="The rule that classified the event.")
    incident_id: int | None = None
    triaged_at: UtcDatetime | None = None


class FailedEvent(Event):
    """A stored event triage could not handle, with the reason it gave; other events went on."""

    failed_at: UtcDatetime
    reason: str


class Incident(NumberedRecord):
    """An unplanned interruption or reduction in quality of a service, and its handling."""

    numbering = INCIDENT_NUMBERING

    host: str | None = None
    service: str | None = None
    symptom: str
    summary: str
    correlation_key: str
    impact: Impact
    urgency: Urgency
    priority: Priority
    state: IncidentState = "New"
    hold_reason: str | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: str | None = None
    assignment_group: str | None = None
    assigned_to: str | None = None
    runbook: str | None = None
    opened_at: UtcDatetime
    responded_at: UtcDatetime | None = None
    resolved_at: UtcDatetime | None = None
    closed_at: UtcDatetime | None = Field(
        default=None, description="When it became Closed or Canceled."
    )
    updated_at: UtcDatetime
    respond_due: UtcDatetime
    resolve_due: UtcDatetime = Field(description="Due date not counting time On Hold.")
    paused_s: float = Field(default=0.0, ge=0, description="Seconds spent On Hold so far.")
    hold_started_at: UtcDatetime | None = None
    event_count: int = Field(default=0, ge=0)
    last_event_at: UtcDatetime | None = None
    time_to_restore_s: float | None = None
    reported_by: str | None = Field(default=None, description="Who opened it: a person or triage.")
    flow_run_ids: list[str] = Field(default_factory=list)
    problem_id: int | None = None
    known_error_id: int | None = None
    version: int = Field(default=1, ge=1, description="Bumped on every change.")

    def reporter_view(self) -> Incident:
        """The incident as a person who reported it, but does not operate, may read it.

        How it is handled stays with operators: the hold notes and a runbook's resolution
        notes (they quote host output), who is assigned, the runbook, its flow runs and
        problem links are emptied. State, number, CI, symptom, priority, times and the
        resolution notes a person wrote remain.
        """
        hidden = dict.fromkeys(REPORTER_HIDDEN) | {"flow_run_ids": []}
        if self.resolution_code in RUNBOOK_RESOLUTIONS:
            hidden["resolution_notes"] = None
        return self.model_copy(update=hidden)

    @property
    def is_open(self) -> bool:
        """Whether the incident still needs work (New, In Progress or On Hold)."""
        return self.state in OPEN_STATES

    def paused_seconds(self, now: datetime) -> float:
        """Seconds the SLA clock has been stopped, including a hold still running at `now`."""
        paused = self.paused_s
        if self.hold_started_at is not None:
            paused += max(0.0, (now - self.hold_started_at).total_seconds())
        return paused

    def sla_breaches(self, now: datetime) -> dict[str, bool]:
        """Whether the response and the resolution targets are missed as of `now`.

        The resolution clock stops while On Hold, so its due date moves by the time held.
        """
        responded = self.responded_at or now
        end = self.resolved_at or self.closed_at or now
        resolve_due = self.resolve_due + timedelta(seconds=self.paused_seconds(end))
        return {"response": responded > self.respond_due, "resolution": end > resolve_due}


class IncidentCreate(BaseModel):
    """What a person or event triage gives to open an incident."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: CiName | None = None
    service: CiName | None = None
    symptom: str = Field(
        min_length=1, max_length=128, description='What is wrong, e.g. "service-down".'
    )
    summary: str = Field(min_length=1, max_length=1000)
    impact: Impact
    urgency: Urgency
    correlation_key: str | None = Field(
        default=None,
        max_length=512,
        description='Events with this key join the open incident; default "host/service/symptom".',
    )
    runbook: str | None = Field(default=None, max_length=255)
    assignment_group: str | None = Field(default=None, max_length=255)

    @model_validator(mode="after")
    def _has_ci(self) -> IncidentCreate:
        if self.host is None and self.service is None:
            raise ValueError("an incident needs a host or a service (or both)")
        return self

    @property
    def key(self) -> str:
        """The correlation key: the given one, else "host/service/symptom" ("-" for none)."""
        if self.correlation_key:
            return self.correlation_key
        return f"{self.host or '-'}/{self.service or '-'}/{self.symptom}"


class IncidentReport(BaseModel):
    """What a person says when reporting an incident: the CI and the symptom, in their words.

    Triage's classification, not the reporter, sets the correlation key, the priority and
    whether any runbook runs; impact and urgency are the reporter's view, applied only for
    operators (whose role is to assess them) and recorded in the worklog for everyone else.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: CiName | None = None
    service: CiName | None = None
    symptom: str = Field(
        default="reported",
        min_length=1,
        max_length=128,
        description='What is wrong, e.g. "service-down".',
    )
    summary: str = Field(min_length=1, max_length=1000)
    impact: Impact | None = None
    urgency: Urgency | None = None

    @model_validator(mode="after")
    def _has_ci(self) -> IncidentReport:
        if self.host is None and self.service is None:
            raise ValueError("an incident needs a host or a service (or both)")
        return self


class IncidentUpdate(BaseModel):
    """A PATCH to an incident: only the fields given are changed.

    For state, impact, urgency and resolution_code a null means "leave as is"; for the
    free-text and assignment fields an explicit null clears the value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: IncidentState | None = None
    hold_reason: ShortText | None = None
    resolution_code: ResolutionCode | None = None
    resolution_notes: LongText | None = None
    assignment_group: Annotated[str, Field(max_length=255)] | None = None
    assigned_to: Annotated[str, Field(max_length=255)] | None = None
    impact: Impact | None = None
    urgency: Urgency | None = None


class WorklogEntry(BaseModel):
    """A note on an incident by a person or a flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    incident_id: int
    at: UtcDatetime
    author: str
    text: str


class AuditEntry(BaseModel):
    """One change to one record: who, what, before and after, from which flow run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    at: UtcDatetime
    actor: str
    action: str
    record_type: str
    record_id: int
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    flow_run_id: str | None = None
