"""The one state machine every kind of record declares: moves, finals, refusals, paths, SQL."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from opsflow.itsm.access import GRANT_STATES
from opsflow.itsm.problems import PROBLEM_STATES
from opsflow.itsm.records import INCIDENT_STATES
from opsflow.itsm.requests import REQUEST_STATES
from opsflow.itsm.states import IllegalTransitionError, StateMachine

MACHINES = [INCIDENT_STATES, PROBLEM_STATES, REQUEST_STATES, GRANT_STATES]


def test_final_states_are_the_states_without_moves() -> None:
    assert INCIDENT_STATES.final == ("Closed", "Canceled")
    assert PROBLEM_STATES.final == ("Closed",)
    assert REQUEST_STATES.final == ("fulfilled", "failed", "rejected", "expired", "canceled")
    assert GRANT_STATES.final == ("expired", "revoked", "denied")


def test_a_refusal_names_the_record_both_states_and_the_legal_moves() -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        REQUEST_STATES.check("approved", "rejected", "REQ0000003")
    error = caught.value
    assert str(error) == (
        "REQ0000003 cannot go from approved to rejected; "
        "allowed from approved: fulfilling, failed, canceled"
    )
    assert (error.kind, error.record, error.current, error.target) == (
        "service request",
        "REQ0000003",
        "approved",
        "rejected",
    )
    assert error.allowed == ("fulfilling", "failed", "canceled")
    with pytest.raises(IllegalTransitionError, match="access grant cannot go from denied"):
        GRANT_STATES.check("denied", "approved")


def test_a_final_record_refuses_every_change() -> None:
    error = PROBLEM_STATES.refuse_final_change("Closed", "Closed", "PRB0000002")
    assert str(error) == "PRB0000002 is Closed, a final state; it cannot be changed"
    assert error.allowed == ()


@pytest.mark.parametrize(
    ("machine", "current", "target", "path"),
    [
        (INCIDENT_STATES, "New", "Closed", ["Resolved", "Closed"]),
        (INCIDENT_STATES, "On Hold", "On Hold", []),
        (REQUEST_STATES, "submitted", "fulfilled", ["approved", "fulfilling", "fulfilled"]),
        (GRANT_STATES, "requested", "expired", ["approved", "expired"]),
    ],
)
def test_the_path_is_the_shortest_chain_of_legal_moves(machine, current, target, path) -> None:
    assert machine.path(current, target) == path
    for step_from, step_to in zip([current, *path], path, strict=False):
        machine.check(step_from, step_to)


def test_no_path_leads_out_of_a_final_state() -> None:
    with pytest.raises(IllegalTransitionError, match="allowed from fulfilled: none, it is final"):
        REQUEST_STATES.path("fulfilled", "submitted", "REQ0000001")


def test_a_machine_refuses_moves_to_states_it_does_not_declare() -> None:
    with pytest.raises(ValueError, match="undeclared states"):
        StateMachine("thing", {"open": ("shut",)})


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.kind)
def test_the_sql_check_admits_exactly_the_declared_states(machine: StateMachine) -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE t (state TEXT NOT NULL CHECK ({machine.sql_check()}))"))
        for state in machine.states:
            conn.execute(text("INSERT INTO t VALUES (:s)"), {"s": state})
    for other in ("", "new", "Resolved'); DROP TABLE t; --", "unknown"):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:s)"), {"s": other})


def test_a_quote_in_a_state_is_escaped_in_sql() -> None:
    machine = StateMachine("odd", {"it's": ()})
    assert machine.sql_check("s") == "s IN ('it''s')"
