"""The problem state machine, known-error matching and recurrence finding, as pure functions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from opsflow.itsm.problems import (
    KNOWN_ERROR_NUMBERING,
    PROBLEM_NUMBERING,
    PROBLEM_STATES,
    KnownError,
    KnownErrorCreate,
    Problem,
    ProblemUpdate,
    UnknownRunbookError,
    apply_problem_update,
    check_workaround,
    find_recurrences,
    match_known_error,
)
from opsflow.itsm.records import Incident
from opsflow.itsm.states import IllegalTransitionError, InvalidUpdateError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STATES = ["New", "Root Cause Analysis", "Known Error", "Resolved", "Closed"]
LEGAL = {
    ("New", "Root Cause Analysis"),
    ("Root Cause Analysis", "Known Error"),
    ("Root Cause Analysis", "Resolved"),
    ("Known Error", "Resolved"),
    ("Resolved", "Closed"),
    ("Resolved", "Root Cause Analysis"),
}


def problem(state: str = "New", root_cause: str | None = "stale pidfile", **extra) -> Problem:
    return Problem(
        id=7,
        service="app",
        symptom="service-down",
        summary="service-down of app keeps recurring",
        state=state,
        root_cause=root_cause,
        opened_at=T0,
        updated_at=T0,
        **extra,
    )


@pytest.mark.parametrize(
    ("current", "target"),
    [(a, b) for a, b in itertools.product(STATES, STATES) if a != b],
    ids=lambda s: s.replace(" ", "-"),
)
def test_only_legal_transitions_are_allowed(current: str, target: str) -> None:
    before = problem(current)
    update = ProblemUpdate(state=target)
    if (current, target) in LEGAL:
        after = apply_problem_update(before, update, T0 + timedelta(hours=1))
        assert after.state == target and after.updated_at == T0 + timedelta(hours=1)
    else:
        with pytest.raises(IllegalTransitionError, match=f"from {current} to {target}"):
            apply_problem_update(before, update, T0)


@pytest.mark.parametrize(
    ("current", "target", "root_cause", "ok"),
    [
        ("Root Cause Analysis", "Known Error", None, False),
        ("Root Cause Analysis", "Known Error", "stale pidfile", True),
        ("Root Cause Analysis", "Resolved", None, False),
        ("Known Error", "Resolved", "stale pidfile", True),
        ("New", "Root Cause Analysis", None, True),
    ],
)
def test_known_error_and_resolved_need_root_cause(current, target, root_cause, ok) -> None:
    before = problem(current, root_cause=None)
    update = ProblemUpdate(state=target, root_cause=root_cause)
    if ok:
        assert apply_problem_update(before, update, T0).state == target
    else:
        with pytest.raises(InvalidUpdateError, match="root_cause"):
            apply_problem_update(before, update, T0)


def test_resolving_stamps_the_time_and_reopening_clears_it() -> None:
    resolved = apply_problem_update(
        problem("Known Error"), ProblemUpdate(state="Resolved", resolution_notes="fixed"), T0
    )
    assert (resolved.resolved_at, resolved.resolution_notes) == (T0, "fixed")
    reopened = apply_problem_update(resolved, ProblemUpdate(state="Root Cause Analysis"), T0)
    assert (reopened.resolved_at, reopened.resolution_notes) == (None, None)
    closed = apply_problem_update(resolved, ProblemUpdate(state="Closed"), T0)
    assert closed.closed_at == T0


def test_closed_is_final_and_no_change_returns_the_same_object() -> None:
    closed = problem("Closed")
    with pytest.raises(IllegalTransitionError, match="final"):
        apply_problem_update(closed, ProblemUpdate(root_cause="something else"), T0)
    assert apply_problem_update(closed, ProblemUpdate(state="Closed"), T0) is closed
    same = problem("New")
    assert apply_problem_update(same, ProblemUpdate(root_cause="stale pidfile"), T0) is same


@pytest.mark.parametrize(
    ("current", "target", "path"),
    [
        ("New", "Known Error", ["Root Cause Analysis", "Known Error"]),
        ("Root Cause Analysis", "Known Error", ["Known Error"]),
        ("Known Error", "Known Error", []),
        ("Resolved", "Known Error", ["Root Cause Analysis", "Known Error"]),
    ],
)
def test_path_to_walks_legal_moves(current, target, path) -> None:
    assert PROBLEM_STATES.path(current, target) == path


def test_path_to_refuses_what_no_moves_reach() -> None:
    with pytest.raises(IllegalTransitionError, match="problem cannot go from Closed to New"):
        PROBLEM_STATES.path("Closed", "New")


@pytest.mark.parametrize(
    ("text", "problem_id", "known_error_id"),
    [
        ("PRB0000007", 7, None),
        ("prb0000012", 12, None),
        ("KE0000003", None, 3),
        ("42", 42, 42),
        ("INC0000001", None, None),
        ("PRB12", None, None),
    ],
)
def test_numbers_parse(text, problem_id, known_error_id) -> None:
    assert PROBLEM_NUMBERING.parse(text) == problem_id
    assert KNOWN_ERROR_NUMBERING.parse(text) == known_error_id


def test_numbers_render() -> None:
    assert PROBLEM_NUMBERING.number(7) == "PRB0000007"
    assert KNOWN_ERROR_NUMBERING.number(3) == "KE0000003"
    assert problem().number == "PRB0000007"


def known_error(id: int, host=None, labels=None, retired=False, **extra) -> KnownError:
    return KnownError(
        id=id,
        service=extra.pop("service", "app"),
        symptom=extra.pop("symptom", "service-down"),
        host=host,
        labels=labels or {},
        root_cause="stale pidfile",
        workaround="recover-hung-service",
        created_at=T0,
        updated_at=T0,
        retired_at=T0 if retired else None,
    )


KNOWN = [
    known_error(1),
    known_error(2, host="lab01"),
    known_error(3, host="lab01", labels={"severity": "critical"}),
    known_error(4, service="db"),
    known_error(5, symptom="disk-full", retired=True),
    known_error(6, labels={"alertname": "ServiceDown"}),
]


@pytest.mark.parametrize(
    ("service", "symptom", "host", "labels", "expected"),
    [
        ("app", "service-down", "lab02", None, 1),
        ("app", "service-down", "lab01", None, 2),
        ("app", "service-down", "lab01", {"severity": "critical"}, 3),
        ("app", "service-down", "lab01", {"severity": "warning"}, 2),
        ("app", "service-down", "lab02", {"alertname": "ServiceDown"}, 6),
        ("app", "service-down", "lab01", {"alertname": "ServiceDown"}, 2),
        ("db", "service-down", "lab01", None, 4),
        ("app", "disk-full", "lab01", None, None),
        ("app", "service-hung", "lab01", None, None),
        (None, "service-down", "lab01", None, None),
    ],
    ids=[
        "service-and-symptom",
        "host-beats-any-host",
        "labels-beat-host-only",
        "wrong-label-falls-back",
        "label-signature",
        "tie-goes-to-oldest",
        "other-service",
        "retired-never-matches",
        "other-symptom",
        "no-service",
    ],
)
def test_known_error_matching(service, symptom, host, labels, expected) -> None:
    found = match_known_error(KNOWN, service, symptom, host, labels)
    assert (found.id if found else None) == expected


def test_workaround_must_be_a_runbook() -> None:
    check_workaround("restart-service", {"restart-service"})
    with pytest.raises(UnknownRunbookError, match="reboot-everything"):
        check_workaround("reboot-everything", {"restart-service"})


def test_known_error_needs_service_and_symptom() -> None:
    with pytest.raises(ValidationError, match="symptom"):
        KnownErrorCreate(service="app", root_cause="x", workaround="restart-service")
    with pytest.raises(ValidationError, match="colour"):
        KnownErrorCreate.model_validate(
            {
                "service": "app",
                "symptom": "s",
                "root_cause": "x",
                "workaround": "restart-service",
                "colour": "red",
            }
        )


def incident(id: int, service="app", symptom="service-down", state="Resolved", problem_id=None):
    return Incident(
        id=id,
        host="lab01",
        service=service,
        symptom=symptom,
        summary="down",
        correlation_key=f"k{id}",
        impact=2,
        urgency=1,
        priority=2,
        state=state,
        resolution_code="auto-remediated" if state == "Resolved" else None,
        opened_at=T0 + timedelta(minutes=id),
        updated_at=T0,
        respond_due=T0,
        resolve_due=T0,
        problem_id=problem_id,
    )


@pytest.mark.parametrize(
    ("incidents", "open_problem", "expected"),
    [
        ([incident(1), incident(2)], None, {("app", "service-down"): ((1, 2), ())}),
        (
            [incident(1), incident(2), incident(3)],
            None,
            {("app", "service-down"): ((1, 2, 3), (1, 2, 3))},
        ),
        (
            [incident(1), incident(2), incident(3, state="Canceled")],
            None,
            {("app", "service-down"): ((1, 2), ())},
        ),
        (
            [incident(1, problem_id=9), incident(2, problem_id=9), incident(3), incident(4)],
            None,
            {("app", "service-down"): ((1, 2, 3, 4), ())},
        ),
        (
            [incident(1, problem_id=7), incident(2)],
            problem(),
            {("app", "service-down"): ((1, 2), (2,))},
        ),
        (
            [incident(1), incident(2), incident(3, service="db"), incident(4, symptom="disk")],
            problem(),
            {
                ("app", "service-down"): ((1, 2), (1, 2)),
                ("db", "service-down"): ((3,), ()),
                ("app", "disk"): ((4,), ()),
            },
        ),
        ([incident(1, service=None)], None, {}),
    ],
    ids=[
        "below-threshold",
        "threshold-opens",
        "canceled-do-not-count",
        "explained-by-another-problem",
        "joins-the-open-problem",
        "grouped-by-service-and-symptom",
        "no-service",
    ],
)
def test_find_recurrences(incidents, open_problem, expected) -> None:
    found = find_recurrences(incidents, [open_problem] if open_problem else [], threshold=3)
    assert {(r.service, r.symptom): (r.incident_ids, r.to_link) for r in found} == expected
    assert [len(r.incident_ids) for r in found] == sorted(
        (len(r.incident_ids) for r in found), reverse=True
    )
