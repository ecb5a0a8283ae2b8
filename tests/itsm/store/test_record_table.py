"""The one versioned, audited record table every kind of record is kept in, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from opsflow.errors import TransientError
from opsflow.itsm.store.access import GRANTS
from opsflow.itsm.store.errors import ConcurrentUpdateError, RecordNotFoundError, StaleVersionError
from opsflow.itsm.store.incidents import INCIDENTS
from opsflow.itsm.store.known_errors import KNOWN_ERRORS
from opsflow.itsm.store.problems import PROBLEMS
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.requests import REQUESTS, service_requests

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def submitted(store: Records):
    return store.requests.create("clear-old-logs", {"days": 7}, "carol", "none", "carol", T0)


def test_every_kind_of_record_is_a_versioned_record_table() -> None:
    tables = [INCIDENTS, PROBLEMS, KNOWN_ERRORS, REQUESTS, GRANTS]
    assert [t.record_type for t in tables] == [
        "incident",
        "problem",
        "known_error",
        "service_request",
        "access_grant",
    ]
    assert all("version" in t.columns and "id" not in t.columns for t in tables)


def test_an_insert_is_version_one_and_audited_as_opened(store: Records) -> None:
    created = submitted(store)
    assert (created.number, created.version) == ("REQ0000001", 1)
    [entry] = store.audit.trail("service_request", created.id)
    assert (entry.action, entry.actor, entry.before) == ("service_request.submitted", "carol", None)
    assert entry.after is not None and entry.after["inputs"] == {"days": 7}


def test_a_change_is_the_next_version_with_before_and_after_audited(store: Records) -> None:
    created = submitted(store)
    moved = store.requests.move(created.id, "approved", "bob", T0, approver="bob")
    assert moved.version == 2
    entry = store.audit.trail("service_request", created.id)[-1]
    assert entry.action == "service_request.approved"
    assert (entry.before["version"], entry.after["version"]) == (1, 2)
    assert entry.after["decided_at"] == T0.isoformat().replace("+00:00", "Z")


def test_a_change_from_a_version_no_longer_current_changes_nothing(store: Records) -> None:
    created = submitted(store)
    store.requests.update(created.id, "bob", T0, outcome="first")
    with pytest.raises(StaleVersionError, match="at version 2, not 1"):
        REQUESTS.modify(
            store.db,
            created.id,
            lambda before: before.model_copy(update={"outcome": "second"}),
            "bob",
            T0,
            expected_version=1,
        )
    assert store.requests.get(created.id).outcome == "first"


def test_a_write_lost_to_another_writer_raises_and_audits_nothing(store: Records) -> None:
    created = submitted(store)
    with pytest.raises(ConcurrentUpdateError) as caught, store.db.write() as conn:
        conn.execute(update(service_requests).values(version=7))  # a writer without the lock
        REQUESTS.write(conn, created, created.model_copy(update={"outcome": "x"}), "bob", T0)
    assert isinstance(caught.value, TransientError), "the caller may try again"
    assert len(store.audit.trail("service_request", created.id)) == 1


def test_a_note_audits_without_changing_the_record(store: Records) -> None:
    created = submitted(store)
    later = T0 + timedelta(minutes=1)
    store.requests.note(created.id, "desk", "decision_sent", {"at": later}, later)
    entry = store.audit.trail("service_request", created.id)[-1]
    assert (entry.action, entry.before) == ("service_request.decision_sent", None)
    assert entry.after == {"at": later.isoformat()}, "datetimes in a note are written as text"
    assert store.requests.get(created.id) == created


@pytest.mark.parametrize("key", [0, -1, "REQ12", "INC0000001", "³", "9" * 40])
def test_what_is_no_id_of_the_kind_is_not_found(store: Records, key: int | str) -> None:
    submitted(store)
    with pytest.raises(RecordNotFoundError, match="no service request"):
        store.requests.get(key)
