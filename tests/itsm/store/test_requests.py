"""Service requests in a real SQLite store: numbers, state machine, audit in one transaction."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from opsflow.itsm.requests import Attachment
from opsflow.itsm.states import IllegalTransitionError
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.requests import RequestQuotaError, Requests

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def requests(records_url: str) -> Requests:
    return Records(records_url).requests


def test_a_request_moves_through_approval_and_every_change_is_audited(requests) -> None:
    created = requests.create(
        "request-service-restart", {"host": "lab02"}, "carol", "one", "carol", NOW
    )
    assert (created.number, created.state, created.version) == ("REQ0000001", "submitted", 1)
    later = NOW + timedelta(seconds=3)
    requests.move(
        created.number,
        "awaiting-approval",
        "flow",
        NOW,
        "run-1",
        approval_run_id="run-1",
        approval_due_at=NOW + timedelta(hours=1),
    )
    approved = requests.move(
        created.id, "approved", "bob", later, "run-1", approver="bob", decision_comment="go ahead"
    )
    assert (approved.approver, approved.decided_at, approved.approval_due_at) == (
        "bob",
        later,
        None,
    )
    assert approved.version == 3
    assert requests.get("REQ0000001") == approved == requests.get(str(approved.id))
    trail = requests.audit_trail(approved.id)
    assert [(e.actor, e.action) for e in trail] == [
        ("carol", "service_request.submitted"),
        ("flow", "service_request.awaiting_approval"),
        ("bob", "service_request.approved"),
    ]
    assert trail[-1].before["state"] == "awaiting-approval"
    assert trail[-1].after["decision_comment"] == "go ahead"
    assert trail[-1].flow_run_id == "run-1"


def test_refused_changes_leave_record_and_audit_untouched(requests) -> None:
    created = requests.create("x", {}, "carol", "none", "carol", NOW)
    with pytest.raises(IllegalTransitionError, match="REQ0000001 cannot go from submitted"):
        requests.move(created.id, "fulfilled", "flow", NOW)
    with pytest.raises(ValueError, match="needs an approver"):
        requests.move(created.id, "approved", "flow", NOW)
    assert requests.get(created.id) == created
    assert len(requests.audit_trail(created.id)) == 1
    with pytest.raises(RecordNotFoundError):
        requests.get("REQ0000099")


def test_linking_and_attaching_twice_changes_nothing_the_second_time(requests) -> None:
    created = requests.create("x", {}, "carol", "none", "carol", NOW)
    attachment = Attachment(name="b.tgz", path="/tmp/b.tgz", sha256="a" * 64, size=3)
    first = requests.link_flow_run(created.id, "run-1", "flow", NOW)
    assert requests.link_flow_run(created.id, "run-1", "flow", NOW) == first
    attached = requests.attach(created.id, [attachment], "flow", NOW)
    assert requests.attach(created.id, [attachment], "flow", NOW) == attached
    assert attached.attachments == [attachment] and attached.flow_run_ids == ["run-1"]
    requests.note(created.id, "bob", "decision_sent", {"decision": "approve"}, NOW)
    assert [e.action for e in requests.audit_trail(created.id)] == [
        "service_request.submitted",
        "service_request.flow_run_linked",
        "service_request.attached",
        "service_request.decision_sent",
    ]
    assert [r.number for r in requests.list(state=["submitted"])] == ["REQ0000001"]


def test_concurrent_submissions_never_exceed_a_requesters_quota(requests) -> None:
    """Counting open requests and inserting is one serialised step per requester, on
    PostgreSQL too (where concurrent transactions would otherwise all count the same)."""
    outcomes: list[str] = []

    def submit() -> None:
        try:
            requests.create("x", {}, "carol", "none", "carol", NOW, max_open=2)
            outcomes.append("created")
        except RequestQuotaError:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 10
    assert len(requests.list(requester="carol")) == 2
    assert requests.create("x", {}, "dave", "none", "dave", NOW, max_open=2).requester == "dave"
