"""The records store against real databases: each test that takes `store` runs on SQLite in
a temporary directory and on a new database of the session's PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateIndex

from opsflow.errors import PermanentError, TransientError
from opsflow.itsm.records import EventIn, IncidentCreate, IncidentUpdate
from opsflow.itsm.states import IllegalTransitionError, InvalidUpdateError
from opsflow.itsm.store.audit import Audit
from opsflow.itsm.store.errors import (
    ConcurrentUpdateError,
    RecordNotFoundError,
    StaleVersionError,
    StoreConfigError,
)
from opsflow.itsm.store.events import EventLink, events
from opsflow.itsm.store.incidents import INCIDENTS, incidents
from opsflow.itsm.store.records import Records, open_records
from tests.support.factories import alert

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def app_down(**extra: object) -> IncidentCreate:
    fields: dict[str, object] = {
        "host": "web1",
        "service": "app",
        "symptom": "service-down",
        "summary": "app is down on web1",
        "impact": 1,
        "urgency": 1,
    }
    return IncidentCreate.model_validate({**fields, **extra})


# -- intake -------------------------------------------------------------------------------


def test_events_round_trip_as_aware_utc(store: Records) -> None:
    cest = timezone(timedelta(hours=2))
    sent = alert(
        status="resolved",
        occurred_at=datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=cest),
        ends_at=datetime(2024, 5, 1, 14, 5, tzinfo=cest),
        labels={"alertname": "AppDown", "note": 'ünïcode "quoted"'},
    )
    assert store.events.store([sent], minutes(6)) == (1, 0)
    [stored] = store.events.pending()
    assert stored.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert stored.occurred_at.tzinfo is UTC
    assert stored.ends_at == minutes(5)
    assert stored.received_at == minutes(6)
    assert stored.dedup_key == sent.dedup_key()
    assert stored.model_dump(include=set(EventIn.model_fields)) == sent.model_dump()
    assert store.events.get(stored.id) == stored


def test_sqlite_intake_stores_datetimes_like_the_rest_of_the_store(tmp_path: Path) -> None:
    """The fast intake path writes exactly what SQLAlchemy's types write for other tables."""
    records = Records(f"sqlite:///{tmp_path / 'records.db'}")
    records.events.store([alert(occurred_at=T0)], T0)
    records.correlation.open_or_correlate(app_down(), T0, actor="test")
    with records.db.engine.connect() as conn:
        raw_event = conn.execute(text("SELECT occurred_at, received_at FROM events")).one()
        raw_incident = conn.execute(text("SELECT opened_at FROM incidents")).one()
    assert raw_event[0] == raw_event[1] == raw_incident[0] == "2024-05-01 12:00:00.000000"


def test_repeated_delivery_stores_nothing_new(store: Records) -> None:
    batch = [alert("a1"), alert("a2"), alert("a3", status="resolved", ends_at=minutes(3))]
    assert store.events.store(batch, minutes(1)) == (3, 0)
    assert store.events.store(batch, minutes(2)) == (0, 3)
    assert len(store.events.pending()) == 3
    assert {e.received_at for e in store.events.pending()} == {minutes(1)}


def test_batch_with_internal_duplicates(store: Records) -> None:
    batch = [alert("a1"), alert("a2"), alert("a1"), alert("a1"), alert("a2")]
    assert store.events.store(batch, T0) == (2, 3)
    assert store.events.store([], T0) == (0, 0)
    assert [e.fingerprint for e in store.events.pending()] == ["a1", "a2"]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (alert(), alert(annotations={"summary": "re-sent"}, labels={"x": "y"}), True),
        (alert(), alert(status="resolved", ends_at=minutes(5)), False),
        (alert(), alert(fingerprint="other"), False),
        (alert(), alert(occurred_at=minutes(1)), False),
        (alert(), alert(source="generic"), False),
        (
            alert(status="resolved", ends_at=minutes(5)),
            alert(status="resolved", ends_at=minutes(6)),
            False,
        ),
        (
            alert(occurred_at=T0),
            alert(occurred_at=T0.astimezone(timezone(timedelta(hours=-5)))),
            True,
        ),
    ],
    ids=[
        "resend-same-state",
        "firing-then-resolved",
        "other-alert",
        "new-occurrence",
        "other-source",
        "other-resolution",
        "same-instant-other-zone",
    ],
)
def test_dedup_key(first: EventIn, second: EventIn, same: bool) -> None:
    assert (first.dedup_key() == second.dedup_key()) is same


def test_intake_refuses_naive_times(store: Records) -> None:
    with pytest.raises(ValueError, match="received_at must be timezone-aware"):
        store.events.store([alert()], datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="timezone"):
        alert(occurred_at=datetime(2024, 5, 1))


def test_events_are_durable_for_another_store_on_the_same_database(records_url: str) -> None:
    url = records_url
    Records(url).events.store([alert("a1"), alert("a2")], T0)
    assert [e.fingerprint for e in Records(url).events.pending()] == ["a1", "a2"]


def test_triage_marks_events_once_and_audits_them(store: Records) -> None:
    store.events.store([alert(f"a{i}") for i in range(5)], T0)
    pending = store.events.pending(limit=3)
    assert [e.fingerprint for e in pending] == ["a0", "a1", "a2"]
    incident, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    decisions = [
        (pending[0].id, "exception", "app-down", incident.id),
        (pending[1].id, "informational", "severity", None),
        (pending[2].id, "warning", "severity", None),
    ]
    assert store.events.mark_triaged(decisions, minutes(1), flow_run_id="run-1") == 3
    assert store.events.mark_triaged(decisions, minutes(2), flow_run_id="run-2") == 0
    assert [e.fingerprint for e in store.events.pending()] == ["a3", "a4"]
    triaged = store.events.get(pending[0].id)
    assert (triaged.event_class, triaged.rule, triaged.incident_id) == (
        "exception",
        "app-down",
        incident.id,
    )
    assert triaged.triaged_at == minutes(1)
    assert [e.id for e in store.events.of_incident(incident.id)] == [pending[0].id]
    [entry] = store.audit.trail("event", pending[0].id)
    assert (entry.action, entry.actor, entry.flow_run_id) == (
        "event.triaged",
        "event-triage",
        "run-1",
    )
    # The audit holds the decision, not copies of the event (finding 9: two per event).
    assert entry.before is None
    assert entry.after == {
        "event_class": "exception",
        "rule": "app-down",
        "incident_id": incident.id,
    }
    assert store.events.counts_by_class() == {
        "exception": 1,
        "informational": 1,
        "warning": 1,
        "pending": 2,
    }


# -- incidents: opening and correlating -----------------------------------------------------


def test_open_then_correlate(store: Records) -> None:
    opened, created = store.correlation.open_or_correlate(
        app_down(), T0, actor="triage", flow_run_id="run-1"
    )
    assert created
    assert (opened.number, opened.state, opened.priority) == ("INC0000001", "New", 1)
    assert (opened.respond_due, opened.resolve_due) == (minutes(15), minutes(60))
    assert (opened.event_count, opened.version, opened.flow_run_ids) == (1, 1, ["run-1"])
    later, created = store.correlation.open_or_correlate(app_down(), minutes(3), actor="triage")
    assert not created
    assert (later.id, later.event_count, later.last_event_at, later.version) == (
        opened.id,
        2,
        minutes(3),
        2,
    )
    earlier, _ = store.correlation.open_or_correlate(app_down(), minutes(1), actor="triage")
    assert earlier.last_event_at == minutes(3)
    assert store.incidents.get(opened.id) == earlier
    trail = store.audit.trail("incident", opened.id)
    assert [e.action for e in trail] == [
        "incident.opened",
        "incident.correlated",
        "incident.correlated",
    ]
    assert trail[0].before is None
    assert trail[0].after == opened.model_dump(mode="json")
    assert trail[1].before == opened.model_dump(mode="json")
    assert trail[1].after == later.model_dump(mode="json")
    assert trail[0].flow_run_id == "run-1"


def test_events_land_on_their_incident_in_the_same_write(store: Records) -> None:
    store.events.store([alert(f"a{i}") for i in range(3)], T0)
    first, *rest = [e.id for e in store.events.pending()]
    opened, _ = store.correlation.open_or_correlate(
        app_down(), T0, actor="triage", link=EventLink([first], "exception", "app-down", T0)
    )
    assert [e.id for e in store.events.of_incident(opened.id)] == [first]
    counted = store.correlation.correlate_more(
        opened.id,
        len(rest),
        minutes(1),
        actor="triage",
        now=minutes(1),
        link=EventLink(rest, "exception", "app-down", minutes(1)),
    )
    assert counted is not None and counted.event_count == 3
    assert sorted(e.id for e in store.events.of_incident(opened.id)) == [first, *rest]
    # A triage stopped here finds nothing left to count again when it restarts.
    assert store.events.pending() == []
    assert store.audit.trail("event", first)[0].after["incident_id"] == opened.id


def test_200_concurrent_reports_make_one_incident(store: Records) -> None:
    threads = 200
    barrier = threading.Barrier(threads)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def report(i: int) -> None:
        try:
            barrier.wait()
            incident, created = store.correlation.open_or_correlate(
                app_down(), minutes(i / 100), actor="t"
            )
            with lock:
                results.append((incident.id, created))
        except BaseException as exc:
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=report, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert len({incident_id for incident_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    [incident] = store.incidents.list(state=["New", "In Progress", "On Hold"])
    assert incident.event_count == threads
    assert incident.version == threads
    assert len(store.audit.trail("incident", incident.id)) == threads


def test_database_itself_refuses_a_second_open_incident_per_key(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    row = opened.model_dump(exclude={"id", "number"})
    with pytest.raises(IntegrityError), store.db.write() as conn:
        conn.execute(insert(incidents).values(row))
    with store.db.write() as conn:
        conn.execute(insert(incidents).values({**row, "state": "Closed"}))


def test_after_resolution_a_new_event_opens_a_new_incident(store: Records) -> None:
    first, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    store.incidents.update(
        first.id,
        IncidentUpdate(state="Resolved", resolution_code="auto-remediated"),
        actor="restoration",
        now=minutes(10),
    )
    assert store.incidents.open_for_key(first.correlation_key) is None
    second, created = store.correlation.open_or_correlate(app_down(), minutes(20), actor="triage")
    assert created
    assert second.id != first.id
    assert second.number == "INC0000002"
    assert store.incidents.open_for_key(first.correlation_key) == second
    assert store.incidents.get(first.id).event_count == 1


# -- incidents: changes ---------------------------------------------------------------------


def test_update_is_audited_with_before_and_after(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    working = store.incidents.update(
        opened.number,
        IncidentUpdate(state="In Progress", assigned_to="alice"),
        actor="alice",
        now=minutes(5),
        flow_run_id="run-7",
    )
    assert (working.state, working.responded_at, working.version) == ("In Progress", minutes(5), 2)
    assert store.incidents.get(opened.id) == working
    entry = store.audit.trail("incident", opened.id)[-1]
    assert (entry.action, entry.actor, entry.flow_run_id, entry.at) == (
        "incident.in_progress",
        "alice",
        "run-7",
        minutes(5),
    )
    assert entry.before is not None and entry.after is not None
    assert (entry.before["state"], entry.after["state"]) == ("New", "In Progress")
    assert (entry.before["assigned_to"], entry.after["assigned_to"]) == (None, "alice")


def test_update_that_changes_nothing_writes_nothing(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(
        app_down(assignment_group="ops"), T0, actor="triage"
    )
    same = store.incidents.update(
        opened.id, IncidentUpdate(assignment_group="ops"), actor="bob", now=minutes(1)
    )
    assert same == opened
    assert len(store.audit.trail("incident", opened.id)) == 1


def test_full_lifecycle_through_the_store(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    steps = [
        (IncidentUpdate(state="In Progress"), minutes(5)),
        (IncidentUpdate(state="On Hold", hold_reason="waiting for vendor"), minutes(10)),
        (IncidentUpdate(state="In Progress"), minutes(40)),
        (IncidentUpdate(state="Resolved", resolution_code="manual"), minutes(50)),
        (IncidentUpdate(state="Closed"), minutes(70)),
    ]
    for update, at in steps:
        current = store.incidents.update(opened.id, update, actor="alice", now=at)
    assert current.state == "Closed"
    assert current.paused_s == 30 * 60
    assert current.time_to_restore_s == 20 * 60
    assert current.sla_breaches(minutes(500)) == {"response": False, "resolution": False}
    assert store.incidents.restore_times() == [20 * 60]
    actions = [e.action for e in store.audit.trail("incident", opened.id)]
    assert actions == [
        "incident.opened",
        "incident.in_progress",
        "incident.on_hold",
        "incident.in_progress",
        "incident.resolved",
        "incident.closed",
    ]


@pytest.mark.parametrize(
    ("update", "error"),
    [
        (IncidentUpdate(state="In Progress"), IllegalTransitionError),
        (IncidentUpdate(assigned_to="bob"), IllegalTransitionError),
    ],
    ids=["reopen-closed", "edit-closed"],
)
def test_refused_update_leaves_the_row_and_audit_unchanged(
    store: Records, update: IncidentUpdate, error: type[Exception]
) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    store.incidents.update(
        opened.id, IncidentUpdate(state="Resolved", resolution_code="manual"), "a", minutes(1)
    )
    closed = store.incidents.update(opened.id, IncidentUpdate(state="Closed"), "a", minutes(2))
    trail = store.audit.trail("incident", opened.id)
    with pytest.raises(error) as caught:
        store.incidents.update(opened.id, update, actor="bob", now=minutes(3))
    assert isinstance(caught.value, PermanentError)
    assert store.incidents.get(opened.id) == closed
    assert store.audit.trail("incident", opened.id) == trail


def test_hold_without_reason_via_the_store_changes_nothing(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    with pytest.raises(InvalidUpdateError, match="hold_reason"):
        store.incidents.update(opened.id, IncidentUpdate(state="On Hold"), "bob", minutes(1))
    assert store.incidents.get(opened.id) == opened


def test_stale_version_is_refused(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    seen = opened.version
    store.incidents.update(opened.id, IncidentUpdate(assigned_to="alice"), "alice", minutes(1))
    current = store.incidents.get(opened.id)
    with pytest.raises(StaleVersionError, match="at version 2, not 1") as caught:
        store.incidents.update(
            opened.id, IncidentUpdate(assigned_to="bob"), "bob", minutes(2), expected_version=seen
        )
    assert isinstance(caught.value, PermanentError)
    assert store.incidents.get(opened.id) == current
    updated = store.incidents.update(
        opened.id,
        IncidentUpdate(assigned_to="bob"),
        "bob",
        minutes(2),
        expected_version=current.version,
    )
    assert (updated.assigned_to, updated.version) == ("bob", 3)


def test_lost_write_is_retried_then_reported(
    store: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version guard on the UPDATE sends the change round again, a few times at most."""
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    real_write = INCIDENTS.try_write
    losses = {"left": 2}

    def lose_some(*args, **kwargs):  # type: ignore[no-untyped-def]
        if losses["left"] > 0:
            losses["left"] -= 1
            return None
        return real_write(*args, **kwargs)

    monkeypatch.setattr(INCIDENTS, "try_write", lose_some)
    updated = store.incidents.update(opened.id, IncidentUpdate(assigned_to="a"), "a", minutes(1))
    assert (updated.assigned_to, updated.version) == ("a", 2)
    assert len(store.audit.trail("incident", opened.id)) == 2

    losses["left"] = 100
    with pytest.raises(ConcurrentUpdateError) as caught:
        store.incidents.update(opened.id, IncidentUpdate(assigned_to="b"), "b", minutes(2))
    assert isinstance(caught.value, TransientError)
    assert store.incidents.get(opened.id) == updated


def test_concurrent_updates_all_land(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    runs = [f"run-{i}" for i in range(20)]
    workers = [
        threading.Thread(
            target=store.incidents.link_flow_run, args=(opened.id, run), kwargs={"now": T0}
        )
        for run in runs
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    final = store.incidents.get(opened.id)
    assert sorted(final.flow_run_ids) == sorted(runs)
    assert final.version == 21


def test_link_flow_run_twice_changes_nothing(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    linked = store.incidents.link_flow_run(opened.id, "run-1", now=minutes(1))
    assert store.incidents.link_flow_run(opened.id, "run-1", now=minutes(2)) == linked
    assert linked.flow_run_ids == ["run-1"]
    assert [e.action for e in store.audit.trail("incident", opened.id)] == [
        "incident.opened",
        "incident.flow_run_linked",
    ]


def test_impact_change_recomputes_priority_in_the_store(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(
        app_down(impact=3, urgency=3), T0, actor="triage"
    )
    assert (opened.priority, opened.resolve_due) == (5, T0 + timedelta(weeks=1))
    raised = store.incidents.update(opened.id, IncidentUpdate(impact=1), "bob", minutes(1))
    assert (raised.priority, raised.respond_due, raised.resolve_due) == (
        3,
        minutes(60),
        minutes(8 * 60),
    )
    assert store.incidents.count_open_by_priority() == {1: 0, 2: 0, 3: 1, 4: 0, 5: 0}


# -- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, "1", "INC0000001", "inc0000001"])
def test_get_incident_by_id_or_number(store: Records, key: int | str) -> None:
    store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    assert store.incidents.get(key).number == "INC0000001"


@pytest.mark.parametrize("key", [99, "INC0000099", "web1", ""])
def test_missing_incident(store: Records, key: int | str) -> None:
    store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    with pytest.raises(RecordNotFoundError) as caught:
        store.incidents.get(key)
    assert isinstance(caught.value, LookupError)
    with pytest.raises(RecordNotFoundError):
        store.incidents.update(key, IncidentUpdate(assigned_to="x"), "x", T0)


def test_list_and_count(store: Records) -> None:
    specs = [
        ("web1", "app", "service-down", 1, 1),
        ("web2", "app", "service-down", 2, 2),
        ("web2", "db", "disk-full", 3, 3),
        ("web3", "app", "slow", 2, 1),
    ]
    for host, service, symptom, impact, urgency in specs:
        store.correlation.open_or_correlate(
            app_down(host=host, service=service, symptom=symptom, impact=impact, urgency=urgency),
            T0,
            actor="triage",
        )
    store.incidents.update(4, IncidentUpdate(state="Canceled"), "bob", minutes(1))
    assert [i.id for i in store.incidents.list()] == [4, 3, 2, 1]
    assert [i.id for i in store.incidents.list(host="web2")] == [3, 2]
    assert [i.id for i in store.incidents.list(service="app", state=["New"])] == [2, 1]
    assert [i.id for i in store.incidents.list(state=["Canceled"])] == [4]
    assert [i.id for i in store.incidents.list(limit=2, offset=1)] == [3, 2]
    assert store.incidents.count_open_by_priority() == {1: 1, 2: 0, 3: 1, 4: 0, 5: 1}


def test_worklog(store: Records) -> None:
    opened, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    first = store.worklog.add(opened.number, "alice", "looking at it", minutes(2))
    store.worklog.add(opened.id, "bob", "restarted app", minutes(3))
    assert [(w.author, w.text) for w in store.worklog.entries(opened.id)] == [
        ("alice", "looking at it"),
        ("bob", "restarted app"),
    ]
    assert first.at == minutes(2)
    entry = store.audit.trail("incident", opened.id)[-1]
    assert (entry.action, entry.actor, entry.before) == ("incident.worklog_added", "bob", None)
    assert entry.after is not None and entry.after["text"] == "restarted app"
    with pytest.raises(RecordNotFoundError):
        store.worklog.add(42, "alice", "no such incident", minutes(4))
    with pytest.raises(ValueError, match="author and a text"):
        store.worklog.add(opened.id, "alice", "  ", minutes(4))


def test_audit_is_append_only() -> None:
    assert {name for name in dir(Audit) if not name.startswith("_")} == {"trail"}


# -- the database itself --------------------------------------------------------------------


def test_sqlite_settings_and_idempotent_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'records.db'}"
    first = Records(url)
    first.events.store([alert()], T0)
    second = Records(url)  # opens a database already at head
    assert len(second.events.pending()) == 1
    with second.db.engine.connect() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 10000,
        "foreign_keys": 1,
    }


def test_default_location_is_under_the_opsflow_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("OPSFLOW_HOME", str(home))
    monkeypatch.delenv("OPSFLOW_DATABASE_URL", raising=False)
    records = Records()
    assert records.db.url == f"sqlite:///{home}/opsflow.db"
    assert (home / "opsflow.db").exists()
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert Records().db.url.endswith("elsewhere.db")


def test_a_process_opens_the_records_of_a_database_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", url)
    records = open_records()
    assert open_records(url) is records, "the configured database and its URL are one"
    assert records.incidents.db is records.events.db is records.db, "one engine for every kind"
    other = open_records(f"sqlite:///{tmp_path / 'other.db'}")
    assert other is not records and other.db.url.endswith("other.db")
    opened = []
    threads = [threading.Thread(target=lambda: opened.append(open_records(url))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is records for r in opened)


def test_unsupported_backend_is_refused() -> None:
    with pytest.raises(StoreConfigError, match="sqlite and postgresql, not 'mysql'"):
        Records("mysql://localhost/opsflow")


def test_postgresql_ddl_uses_partial_indexes_and_on_conflict() -> None:
    """Without a server at hand, at least the PostgreSQL SQL is what we mean."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    ddl = {
        index.name: str(CreateIndex(index).compile(dialect=dialect))
        for table in (incidents, events)
        for index in table.indexes
    }
    assert "WHERE state IN ('New', 'In Progress', 'On Hold')" in ddl["uq_incidents_open_key"]
    assert "UNIQUE" in ddl["uq_incidents_open_key"]
    assert "WHERE triaged_at IS NULL" in ddl["ix_events_pending"]
    statement = postgresql.insert(events).on_conflict_do_nothing(index_elements=["dedup_key"])
    assert "ON CONFLICT (dedup_key) DO NOTHING" in str(statement.compile(dialect=dialect))
    query = select(incidents).where(incidents.c.id == 1).with_for_update()
    assert "FOR UPDATE" in str(query.compile(dialect=dialect))


def test_remediation_budget_is_never_overspent_by_concurrent_restorations(store: Records) -> None:
    incident, _ = store.correlation.open_or_correlate(app_down(), T0, actor="triage")
    hour_ago = minutes(-60)
    spent: list[int | None] = []

    def spend() -> None:
        spent.append(store.remediations.spend("app", "lab01", incident.id, 3, hour_ago, T0))

    threads = [threading.Thread(target=spend) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s for s in spent if s is not None) == [1, 2, 3]
    assert spent.count(None) == 17
    assert store.remediations.spend("app", "lab01", incident.id, 3, minutes(1), minutes(2)) == 1, (
        "remediations before the window do not count"
    )


def test_triage_batches_stay_within_the_byte_budget(store: Records) -> None:
    """Sizes are measured by the database (JSON cast to text on both backends)."""
    store.events.store([alert(f"a{i}", summary="x" * 1000) for i in range(5)], T0)
    assert [e.fingerprint for e in store.events.pending(max_bytes=2500)] == ["a0", "a1"]
    assert [e.fingerprint for e in store.events.pending(max_bytes=10)] == ["a0"], (
        "the first event goes however large, so triage never stalls"
    )
    assert len(store.events.pending(limit=4, max_bytes=10**6)) == 4
