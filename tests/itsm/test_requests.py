"""The service request state machine and the signatures that bind approval decisions, as pure
functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsflow.itsm.requests import (
    ServiceRequest,
    apply_transition,
    decision_signature,
    signature_valid,
)
from opsflow.itsm.states import IllegalTransitionError

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _request(**fields) -> ServiceRequest:
    base = {"id": 7, "item": "x", "requester": "carol", "submitted_at": NOW, "updated_at": NOW}
    return ServiceRequest.model_validate({**base, **fields})


def test_state_machine_allows_the_process_and_nothing_else() -> None:
    record = _request()
    assert record.number == "REQ0000007"
    waiting = apply_transition(record, "awaiting-approval", NOW, approval_due_at=NOW)
    approved = apply_transition(waiting, "approved", NOW + timedelta(seconds=5), approver="bob")
    assert approved.decided_at == NOW + timedelta(seconds=5) and approved.approval_due_at is None
    fulfilling = apply_transition(approved, "fulfilling", NOW)
    done = apply_transition(fulfilling, "fulfilled", NOW, outcome="ok")
    assert done.is_closed and done.closed_at == NOW
    with pytest.raises(IllegalTransitionError, match="allowed from fulfilled: none"):
        apply_transition(done, "failed", NOW)
    with pytest.raises(IllegalTransitionError, match="from submitted to fulfilling"):
        apply_transition(record, "fulfilling", NOW)
    with pytest.raises(IllegalTransitionError, match="from fulfilling to canceled"):
        apply_transition(fulfilling, "canceled", NOW)
    with pytest.raises(ValueError, match="needs an approver"):
        apply_transition(waiting, "approved", NOW)


def test_decision_signatures_bind_request_run_decision_approver_and_comment() -> None:
    key = b"k" * 32
    signature = decision_signature(key, 7, "run-1", "approve", "bob", "ok")
    assert signature_valid(key, signature, 7, "run-1", "approve", "bob", "ok")
    for changed in (
        (8, "run-1", "approve", "bob", "ok"),
        (7, "run-2", "approve", "bob", "ok"),
        (7, "run-1", "reject", "bob", "ok"),
        (7, "run-1", "approve", "eve", "ok"),
        (7, "run-1", "approve", "bob", "ok!"),
    ):
        assert not signature_valid(key, signature, *changed)
    assert not signature_valid(b"other" * 8, signature, 7, "run-1", "approve", "bob", "ok")
    assert not signature_valid(key, None, 7, "run-1", "approve", "bob", "ok")
