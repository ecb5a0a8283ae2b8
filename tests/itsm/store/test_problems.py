"""Problems and known errors in a real store: links, audit, known-error matching and counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from opsflow.itsm.problems import (
    KnownErrorCreate,
    ProblemUpdate,
    UnknownRunbookError,
)
from opsflow.itsm.states import IllegalTransitionError
from opsflow.itsm.store.incidents import incidents
from opsflow.itsm.store.known_errors import DuplicateKnownErrorError
from opsflow.itsm.store.problems import IncidentLinkError
from opsflow.itsm.store.records import Records
from tests.support.factories import NOW, failure

RUNBOOKS = ["recover-hung-service", "restart-service"]


def known_error(store: Records, problem=None, **signature):
    create = KnownErrorCreate(
        service=signature.pop("service", "app"),
        symptom=signature.pop("symptom", "service-down"),
        root_cause="the app leaves a stale pidfile when it crashes",
        workaround="recover-hung-service",
        problem=problem,
        **signature,
    )
    return store.known_errors.add(create, "olga", NOW, RUNBOOKS)


def test_recurrence_opens_one_problem_and_links_incidents_once(store) -> None:
    ids = [failure(store, at=NOW + timedelta(hours=i)).id for i in range(3)]
    change = store.problems.record_recurrence("app", "service-down", ids, "problem-review", NOW)
    assert change.created and change.linked == tuple(ids)
    assert change.problem.number == "PRB0000001" and change.problem.incident_ids == ids
    with store.db.read() as conn:
        rows = conn.execute(select(incidents.c.id, incidents.c.problem_id)).all()
    assert {problem_id for _, problem_id in rows} == {change.problem.id}
    again = store.problems.record_recurrence("app", "service-down", ids, "problem-review", NOW)
    assert (again.created, again.linked, again.problem.id) == (False, (), change.problem.id)
    fourth = failure(store, at=NOW + timedelta(hours=5))
    added = store.problems.record_recurrence(
        "app", "service-down", [fourth.id], "problem-review", NOW
    )
    assert added.linked == (fourth.id,) and added.problem.incident_ids == [*ids, fourth.id]


def test_every_change_is_audited_on_both_records(store) -> None:
    incident = failure(store)
    change = store.problems.record_recurrence("app", "service-down", [incident.id], "review", NOW)
    problem_actions = [a.action for a in store.audit.trail("problem", change.problem.id)]
    assert problem_actions == ["problem.opened", "problem.incidents_linked"]
    linked = store.audit.trail("incident", incident.id)[-1]
    assert linked.action == "incident.problem_linked" and linked.actor == "review"
    assert (linked.before["problem_id"], linked.after["problem_id"]) == (None, change.problem.id)
    assert store.incidents.get(incident.id).version == incident.version + 1


def test_link_incident_to_problem_is_idempotent_and_refuses_a_second_problem(store) -> None:
    first, second = failure(store), failure(store, at=NOW + timedelta(hours=1))
    problem = store.problems.record_recurrence("app", "service-down", [first.id], "r", NOW).problem
    linked = store.problems.link_incident(problem.number, second.number, "olga", NOW)
    assert linked.incident_ids == [first.id, second.id]
    assert store.problems.link_incident(problem.id, second.id, "olga", NOW) == linked
    other = failure(store, service="db")
    other_problem = store.problems.record_recurrence(
        "db", "service-down", [other.id], "r", NOW
    ).problem
    with pytest.raises(IncidentLinkError, match="already explained"):
        store.problems.link_incident(other_problem.id, first.id, "olga", NOW)


def test_problem_moves_through_legal_states_only(store) -> None:
    problem = store.problems.record_recurrence("app", "service-down", [], "r", NOW).problem
    with pytest.raises(IllegalTransitionError):
        store.problems.update(problem.id, ProblemUpdate(state="Resolved"), "olga", NOW)
    for state in ("Root Cause Analysis", "Known Error", "Resolved", "Closed"):
        problem = store.problems.update(
            problem.id, ProblemUpdate(state=state, root_cause="stale pidfile"), "olga", NOW
        )
    assert problem.state == "Closed" and problem.closed_at == NOW
    actions = [a.action for a in store.audit.trail("problem", problem.id)]
    assert actions[-4:] == [
        "problem.root_cause_analysis",
        "problem.known_error",
        "problem.resolved",
        "problem.closed",
    ]
    reopened = store.problems.record_recurrence("app", "service-down", [], "r", NOW).problem
    assert reopened.id != problem.id and reopened.state == "New"


def test_known_error_moves_its_problem_to_known_error(store) -> None:
    incident = failure(store)
    problem = store.problems.record_recurrence(
        "app", "service-down", [incident.id], "r", NOW
    ).problem
    ke = known_error(store, problem=problem.number)
    assert (ke.number, ke.problem_id, ke.times_applied) == ("KE0000001", problem.id, 0)
    after = store.problems.get(problem.id)
    assert after.state == "Known Error" and after.known_error_ids == [ke.id]
    assert after.root_cause == ke.root_cause
    assert [a.action for a in store.audit.trail("known_error", ke.id)] == ["known_error.added"]


def test_known_error_refuses_unknown_runbooks_and_duplicates(store) -> None:
    with pytest.raises(UnknownRunbookError, match="reboot"):
        store.known_errors.add(
            KnownErrorCreate(service="app", symptom="s", root_cause="x", workaround="reboot"),
            "olga",
            NOW,
            RUNBOOKS,
        )
    known_error(store, host="web1")
    with pytest.raises(DuplicateKnownErrorError, match="KE0000001"):
        known_error(store, host="web1")
    assert known_error(store, host="web2").number == "KE0000002"


def test_match_known_error_by_incident_or_fields(store) -> None:
    general, on_web1 = known_error(store), known_error(store, host="web1")
    assert store.known_errors.match(failure(store, host="web1")) == on_web1
    assert store.known_errors.match(("app", "service-down", "web2")) == general
    assert store.known_errors.match(("app", "disk-full", "web1")) is None
    store.known_errors.retire(on_web1.id, "olga", NOW)
    assert store.known_errors.match(("app", "service-down", "web1")) == general
    assert [k.id for k in store.known_errors.active()] == [general.id]


def test_linking_to_a_known_error_links_its_problem_too(store) -> None:
    first = failure(store)
    problem = store.problems.record_recurrence("app", "service-down", [first.id], "r", NOW).problem
    ke = known_error(store, problem=problem.id)
    later = failure(store, at=NOW + timedelta(hours=2), resolve_after=None)
    linked = store.known_errors.link_incident(later.id, ke.number, "triage", NOW)
    assert (linked.known_error_id, linked.problem_id) == (ke.id, problem.id)
    assert store.known_errors.link_incident(later.id, ke.id, "triage", NOW) == linked
    assert store.audit.trail("incident", later.id)[-1].action == "incident.known_error_linked"


def test_workaround_outcomes_count_once_per_incident(store) -> None:
    ke = known_error(store)
    one, two = failure(store), failure(store, host="web2")
    assert (
        store.known_errors.record_workaround_outcome(ke.id, False, incident=one.id).times_applied
        == 1
    )
    corrected = store.known_errors.record_workaround_outcome(ke.id, True, incident=one.id)
    assert (corrected.times_applied, corrected.times_worked) == (1, 1)
    same = store.known_errors.record_workaround_outcome(ke.id, True, incident=one.id)
    assert same == corrected
    counted = store.known_errors.record_workaround_outcome(ke.number, True, incident=two.id)
    assert (counted.times_applied, counted.times_worked) == (2, 2)
    actions = [a.action for a in store.audit.trail("known_error", ke.id)]
    assert actions == [
        "known_error.added",
        "known_error.workaround_failed",
        "known_error.workaround_worked",
        "known_error.workaround_worked",
    ]
