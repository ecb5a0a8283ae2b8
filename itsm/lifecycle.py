"""The incident state machine and the SLA clock, as pure functions of the record and the time.

Nothing here reads the clock or the database: the caller passes `now`, so the store, the
flows and the tests all get the same answer for the same inputs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opsflow.itsm.priority import SlaTargets, priority
from opsflow.itsm.records import INCIDENT_STATES, Incident, IncidentState, IncidentUpdate
from opsflow.itsm.states import InvalidUpdateError

_RESOLUTION_STATES: tuple[IncidentState, ...] = ("Resolved", "Closed", "Canceled")

_DEFAULT_TARGETS = SlaTargets()


def apply_update(
    incident: Incident,
    update: IncidentUpdate,
    now: datetime,
    targets: SlaTargets | None = None,
) -> Incident:
    """The incident after `update` at `now`, validated; the same object when nothing changes.

    Moving out of New records the response; On Hold stops the resolution clock until the
    incident leaves it; Resolved records the time to restore (hold time excluded); a new
    impact or urgency recomputes the priority and the due dates from `targets`.

    Raises:
        IllegalTransitionError: the state change is not allowed, or the incident is final.
        InvalidUpdateError: a required field is missing or a field does not fit the state.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    targets = targets or _DEFAULT_TARGETS
    given = update.model_dump(exclude_unset=True)
    if not given:
        return incident
    changes: dict[str, Any] = {}
    for field in ("hold_reason", "resolution_notes", "assignment_group", "assigned_to"):
        if field in given:
            changes[field] = given[field]
    for field in ("impact", "urgency", "resolution_code"):
        if given.get(field) is not None:
            changes[field] = given[field]
    target = given.get("state") or incident.state

    if INCIDENT_STATES.kept_final(incident, target, changes):
        return incident

    if target != incident.state:
        INCIDENT_STATES.check(incident.state, target)
        changes.update(_transition_effects(incident, target, now))

    impact = changes.get("impact", incident.impact)
    urgency = changes.get("urgency", incident.urgency)
    if (impact, urgency) != (incident.impact, incident.urgency):
        new_priority = priority(impact, urgency)
        if new_priority != incident.priority:
            respond_due, resolve_due = targets.due_dates(new_priority, incident.opened_at)
            changes.update(priority=new_priority, respond_due=respond_due, resolve_due=resolve_due)

    _check_fields_fit_state(incident, target, given, changes)

    if all(getattr(incident, name) == value for name, value in changes.items()):
        return incident
    changes["updated_at"] = now
    return incident.model_copy(update=changes)


def _transition_effects(incident: Incident, target: IncidentState, now: datetime) -> dict:
    """The clock and bookkeeping fields a move from the incident's state to `target` sets."""
    effects: dict[str, Any] = {"state": target}
    if incident.state == "New" and incident.responded_at is None:
        effects["responded_at"] = now
    if incident.state == "On Hold":
        held = 0.0
        if incident.hold_started_at is not None:
            held = max(0.0, (now - incident.hold_started_at).total_seconds())
        effects.update(paused_s=incident.paused_s + held, hold_started_at=None, hold_reason=None)
    if target == "On Hold":
        effects["hold_started_at"] = now
    if target == "Resolved":
        paused = effects.get("paused_s", incident.paused_s)
        elapsed = (now - incident.opened_at).total_seconds() - paused
        effects.update(resolved_at=now, time_to_restore_s=max(0.0, elapsed))
    if incident.state == "Resolved" and target == "In Progress":
        effects.update(
            resolved_at=None, time_to_restore_s=None, resolution_code=None, resolution_notes=None
        )
    if target in INCIDENT_STATES.final:
        effects["closed_at"] = now
    return effects


def _check_fields_fit_state(
    incident: Incident, target: IncidentState, given: dict[str, Any], changes: dict[str, Any]
) -> None:
    """Refuse a hold without a reason, a resolution without a code, and misplaced fields."""
    hold_reason = changes.get("hold_reason", incident.hold_reason)
    if target == "On Hold" and not hold_reason:
        raise InvalidUpdateError("hold_reason", "required to put an incident On Hold")
    if target != "On Hold" and given.get("hold_reason"):
        raise InvalidUpdateError("hold_reason", f"only applies On Hold, not {target}")
    if target == "Resolved" and changes.get("resolution_code", incident.resolution_code) is None:
        raise InvalidUpdateError("resolution_code", "required to resolve an incident")
    for field in ("resolution_code", "resolution_notes"):
        if given.get(field) is not None and target not in _RESOLUTION_STATES:
            raise InvalidUpdateError(field, f"only applies when Resolved or Canceled, not {target}")
