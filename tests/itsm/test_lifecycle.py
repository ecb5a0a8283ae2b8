"""The incident state machine and the SLA clock, as pure functions of record and time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from opsflow.itsm.lifecycle import apply_update
from opsflow.itsm.priority import SlaTargets
from opsflow.itsm.records import INCIDENT_STATES, Incident, IncidentCreate, IncidentUpdate
from opsflow.itsm.states import IllegalTransitionError, InvalidUpdateError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STATES = ["New", "In Progress", "On Hold", "Resolved", "Closed", "Canceled"]
LEGAL = {
    ("New", "In Progress"),
    ("New", "On Hold"),
    ("New", "Resolved"),
    ("New", "Canceled"),
    ("In Progress", "On Hold"),
    ("In Progress", "Resolved"),
    ("In Progress", "Canceled"),
    ("On Hold", "In Progress"),
    ("On Hold", "Resolved"),
    ("On Hold", "Canceled"),
    ("Resolved", "Closed"),
    ("Resolved", "In Progress"),
}
PAIRS = [(a, b) for a, b in itertools.product(STATES, STATES)]


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def incident(state: str = "New", impact: int = 1, urgency: int = 1, **extra: Any) -> Incident:
    """A P1 incident opened at T0, in `state` with the fields that state implies."""
    respond_due, resolve_due = SlaTargets().due_dates(1, T0)
    fields: dict[str, Any] = {
        "id": 7,
        "host": "web1",
        "service": "app",
        "symptom": "service-down",
        "summary": "app is down on web1",
        "correlation_key": "web1/app/service-down",
        "impact": impact,
        "urgency": urgency,
        "priority": 1,
        "state": state,
        "opened_at": T0,
        "updated_at": T0,
        "respond_due": respond_due,
        "resolve_due": resolve_due,
        "event_count": 1,
        "last_event_at": T0,
    }
    if state != "New":
        fields["responded_at"] = minutes(1)
    if state == "On Hold":
        fields.update(hold_reason="waiting for vendor", hold_started_at=minutes(2))
    if state in ("Resolved", "Closed"):
        fields.update(resolution_code="manual", resolved_at=minutes(3), time_to_restore_s=180.0)
    if state in ("Closed", "Canceled"):
        fields["closed_at"] = minutes(4)
    return Incident.model_validate({**fields, **extra})


def move_to(target: str) -> IncidentUpdate:
    """An update to `target` carrying what that state requires."""
    extra: dict[str, Any] = {}
    if target == "On Hold":
        extra["hold_reason"] = "waiting for vendor"
    if target == "Resolved":
        extra["resolution_code"] = "auto-remediated"
    return IncidentUpdate(state=target, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_check_transition_table(current: str, target: str) -> None:
    if (current, target) in LEGAL:
        INCIDENT_STATES.check(current, target)  # type: ignore[arg-type]
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            INCIDENT_STATES.check(current, target)  # type: ignore[arg-type]
        assert f"from {current} to {target}" in str(caught.value)
        assert caught.value.current == current
        assert caught.value.target == target


def test_illegal_transition_message_lists_what_is_allowed() -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        INCIDENT_STATES.check("Closed", "In Progress")
    assert str(caught.value) == (
        "incident cannot go from Closed to In Progress; allowed from Closed: none, it is final"
    )
    with pytest.raises(IllegalTransitionError, match="allowed from Resolved: Closed, In Progress"):
        INCIDENT_STATES.check("Resolved", "On Hold")


MOVES = [(a, b) for a, b in PAIRS if a != b]


@pytest.mark.parametrize(("current", "target"), MOVES, ids=[f"{a}->{b}" for a, b in MOVES])
def test_apply_update_follows_the_table(current: str, target: str) -> None:
    before = incident(current)
    if (current, target) in LEGAL:
        after = apply_update(before, move_to(target), minutes(30))
        assert after.state == target
        assert after.updated_at == minutes(30)
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            apply_update(before, move_to(target), minutes(30))
        assert current in str(caught.value)
        assert target in str(caught.value)


@pytest.mark.parametrize("final", ["Closed", "Canceled"])
def test_final_incidents_accept_no_change_at_all(final: str) -> None:
    with pytest.raises(IllegalTransitionError, match=f"incident is {final}, a final state"):
        apply_update(incident(final), IncidentUpdate(assigned_to="alice"), minutes(30))


@pytest.mark.parametrize(
    ("current", "update", "field"),
    [
        ("In Progress", IncidentUpdate(state="On Hold"), "hold_reason"),
        ("New", IncidentUpdate(state="On Hold"), "hold_reason"),
        ("In Progress", IncidentUpdate(state="Resolved"), "resolution_code"),
        ("On Hold", IncidentUpdate(state="Resolved", resolution_notes="fixed"), "resolution_code"),
        ("On Hold", IncidentUpdate(hold_reason=None), "hold_reason"),
        ("In Progress", IncidentUpdate(hold_reason="because"), "hold_reason"),
        ("On Hold", IncidentUpdate(state="In Progress", hold_reason="x"), "hold_reason"),
        ("In Progress", IncidentUpdate(resolution_code="manual"), "resolution_code"),
        (
            "Resolved",
            IncidentUpdate(state="In Progress", resolution_code="manual"),
            "resolution_code",
        ),
    ],
    ids=[
        "hold-without-reason",
        "hold-from-new-without-reason",
        "resolve-without-code",
        "resolve-with-notes-only",
        "clear-reason-while-held",
        "reason-while-not-held",
        "reason-while-leaving-hold",
        "code-while-open",
        "code-on-reopen",
    ],
)
def test_incomplete_or_misplaced_fields_are_refused(
    current: str, update: IncidentUpdate, field: str
) -> None:
    with pytest.raises(InvalidUpdateError) as caught:
        apply_update(incident(current), update, minutes(30))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_first_move_out_of_new_is_the_response() -> None:
    after = apply_update(incident("New"), IncidentUpdate(state="In Progress"), minutes(5))
    assert after.responded_at == minutes(5)
    later = apply_update(after, move_to("On Hold"), minutes(6))
    assert later.responded_at == minutes(5)


def test_hold_stops_the_clock_and_resolution_measures_time_to_restore() -> None:
    working = apply_update(incident("New"), IncidentUpdate(state="In Progress"), minutes(5))
    held = apply_update(working, move_to("On Hold"), minutes(10))
    assert held.hold_started_at == minutes(10)
    assert held.hold_reason == "waiting for vendor"
    back = apply_update(held, IncidentUpdate(state="In Progress"), minutes(40))
    assert back.paused_s == 30 * 60
    assert back.hold_started_at is None
    assert back.hold_reason is None
    resolved = apply_update(back, move_to("Resolved"), minutes(50))
    assert resolved.resolved_at == minutes(50)
    assert resolved.resolution_code == "auto-remediated"
    assert resolved.time_to_restore_s == 20 * 60
    closed = apply_update(resolved, IncidentUpdate(state="Closed"), minutes(60))
    assert closed.closed_at == minutes(60)


def test_resolving_straight_from_hold_excludes_the_hold() -> None:
    held = incident("On Hold", hold_started_at=minutes(10))
    resolved = apply_update(held, move_to("Resolved"), minutes(45))
    assert resolved.paused_s == 35 * 60
    assert resolved.time_to_restore_s == 10 * 60


def test_reopen_clears_the_resolution() -> None:
    reopened = apply_update(incident("Resolved"), IncidentUpdate(state="In Progress"), minutes(9))
    assert reopened.state == "In Progress"
    assert reopened.resolved_at is None
    assert reopened.resolution_code is None
    assert reopened.time_to_restore_s is None


def test_sla_resolution_clock_stops_while_on_hold() -> None:
    """A P1 (1 h to resolve) held for 30 min is fine at 50 min, breached at 95 min."""
    held = apply_update(incident("In Progress"), move_to("On Hold"), minutes(10))
    assert held.sla_breaches(minutes(80)) == {"response": False, "resolution": False}
    back = apply_update(held, IncidentUpdate(state="In Progress"), minutes(40))
    assert back.sla_breaches(minutes(50)) == {"response": False, "resolution": False}
    assert back.sla_breaches(minutes(89)) == {"response": False, "resolution": False}
    assert back.sla_breaches(minutes(95)) == {"response": False, "resolution": True}


def test_sla_resolution_judged_at_resolution_time() -> None:
    resolved = apply_update(incident("In Progress"), move_to("Resolved"), minutes(45))
    assert resolved.sla_breaches(minutes(500)) == {"response": False, "resolution": False}
    late = apply_update(incident("In Progress"), move_to("Resolved"), minutes(61))
    assert late.sla_breaches(minutes(62))["resolution"] is True


@pytest.mark.parametrize(
    ("responded_after", "now_after", "breached"),
    [
        (None, 14, False),
        (None, 16, True),
        (10, 600, False),
        (20, 25, True),
    ],
    ids=["unanswered-in-time", "unanswered-late", "answered-in-time", "answered-late"],
)
def test_sla_response_breach(responded_after: int | None, now_after: int, breached: bool) -> None:
    """P1 must be responded to within 15 min of opening."""
    record = incident("New")
    if responded_after is not None:
        record = apply_update(record, IncidentUpdate(state="In Progress"), minutes(responded_after))
    assert record.sla_breaches(minutes(now_after))["response"] is breached


def test_impact_and_urgency_changes_recompute_priority_and_due_dates() -> None:
    after = apply_update(incident("In Progress"), IncidentUpdate(impact=3, urgency=2), minutes(5))
    assert after.priority == 4
    assert after.respond_due == T0 + timedelta(hours=4)
    assert after.resolve_due == T0 + timedelta(hours=24)
    custom = SlaTargets.model_validate({"p2": {"respond": "PT1M", "resolve": "PT2M"}})
    p2 = apply_update(incident("In Progress"), IncidentUpdate(urgency=2), minutes(5), custom)
    assert (p2.priority, p2.resolve_due) == (2, minutes(2))


def test_update_changing_nothing_returns_the_same_record() -> None:
    before = incident("In Progress", assigned_to="alice")
    assert apply_update(before, IncidentUpdate(), minutes(5)) is before
    assert apply_update(before, IncidentUpdate(state="In Progress"), minutes(5)) is before
    assert apply_update(before, IncidentUpdate(assigned_to="alice"), minutes(5)) is before


def test_explicit_null_clears_assignment_but_not_state() -> None:
    before = incident("In Progress", assigned_to="alice", assignment_group="ops")
    after = apply_update(before, IncidentUpdate(assigned_to=None, state=None), minutes(5))
    assert after.assigned_to is None
    assert after.assignment_group == "ops"
    assert after.state == "In Progress"


def test_time_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        apply_update(incident(), IncidentUpdate(state="In Progress"), datetime(2024, 5, 1))


def test_payload_models_forbid_unknown_fields_and_default_the_key() -> None:
    with pytest.raises(ValidationError, match="colour"):
        IncidentUpdate.model_validate({"state": "Resolved", "colour": "red"})
    with pytest.raises(ValidationError, match="colour"):
        IncidentCreate.model_validate(
            {"host": "web1", "symptom": "s", "summary": "x", "impact": 1, "urgency": 1, "colour": 1}
        )
    create = IncidentCreate(
        host="web1", service="app", symptom="disk-full", summary="x", impact=2, urgency=2
    )
    assert create.key == "web1/app/disk-full"
    assert (
        IncidentCreate(service="app", symptom="s", summary="x", impact=1, urgency=1).key
        == "-/app/s"
    )
    with pytest.raises(ValidationError, match="host or a service"):
        IncidentCreate(symptom="s", summary="x", impact=1, urgency=1)


def test_incident_number_follows_the_id() -> None:
    assert incident().number == "INC0000007"
    with pytest.raises(ValidationError, match="does not match"):
        incident(number="INC0000008")
    assert Incident.model_validate(incident().model_dump(mode="json")) == incident()


@pytest.mark.parametrize("final", ["Closed", "Canceled"])
def test_final_incidents_take_a_patch_that_changes_nothing(final: str) -> None:
    before = incident(final, assigned_to="alice")
    same = IncidentUpdate(state=final, assigned_to="alice", impact=None)  # type: ignore[arg-type]
    assert apply_update(before, same, minutes(30)) is before
