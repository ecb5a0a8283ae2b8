"""Releases in a real store (SQLite and PostgreSQL): numbers, state machine, host steps, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from opsflow.itsm.releases import (
    ReleaseCreate,
    ReleaseHost,
    batch_size,
    plan_batches,
    release_before,
    valid_batch,
)
from opsflow.itsm.states import IllegalTransitionError
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.records import Records
from opsflow.itsm.store.releases import Releases

NOW = datetime(2026, 12, 2, 9, tzinfo=UTC)


@pytest.fixture
def releases(records_url: str) -> Releases:
    return Records(records_url).releases


def test_a_release_is_recorded_rolled_out_host_by_host_and_every_change_audited(
    releases: Releases,
) -> None:
    made = releases.create("app", "1.1.0", "carol", "bob", "bob", NOW, batch="2", canary=1)
    assert (made.number, made.state, made.to_version, made.version) == (
        "REL0000001",
        "approved",
        "1.1.0",
        1,
    )
    later = NOW + timedelta(seconds=5)
    planned = [ReleaseHost(host=h, previous="1.0.0") for h in ("lab01", "lab02")]
    releases.plan_hosts(made.id, planned, "1.0.0", "rollout", NOW, "run-1")
    rolling = releases.move(made.number, "rolling-out", "rollout", NOW, "run-1")
    assert rolling.started_at == NOW
    step = ReleaseHost(host="lab01", previous="1.0.0", step="deploying")
    releases.record_host(made.id, step, "rollout", NOW, "run-1")
    done = step.model_copy(update={"step": "deployed", "detail": "gate passed"})
    after = releases.record_host(made.id, done, "rollout", later, "run-1")
    assert [(h.host, h.step) for h in after.hosts] == [("lab01", "deployed"), ("lab02", "pending")]
    assert releases.record_host(made.id, done, "rollout", later, "run-1") == after  # no change
    final = releases.move(made.id, "deployed", "rollout", later, "run-1", outcome="2 hosts")
    assert (final.finished_at, final.from_version, final.outcome) == (later, "1.0.0", "2 hosts")
    assert releases.get("REL0000001") == final == releases.get(str(final.id))

    trail = releases.audit_trail(final.id)
    assert [e.action for e in trail] == [
        "release.approved",
        "release.hosts_planned",
        "release.rolling_out",
        "release.host_deploying",
        "release.host_deployed",
        "release.deployed",
    ]
    assert trail[0].actor == "bob"
    assert {e.flow_run_id for e in trail[1:]} == {"run-1"}
    assert trail[-1].before["state"] == "rolling-out"


def test_a_takeover_keeps_the_hosts_an_earlier_run_recorded(releases: Releases) -> None:
    made = releases.create("app", "1.1.0", "alice", "alice", "alice", NOW)
    first = [ReleaseHost(host=h, previous="1.0.0") for h in ("lab01", "lab02")]
    releases.plan_hosts(made.id, first, "1.0.0", "rollout", NOW)
    releases.record_host(made.id, first[0].model_copy(update={"step": "deploying"}), "r", NOW)
    # The second run read lab01 already switched: its plan must not forget lab01 was changed.
    again = [
        ReleaseHost(host="lab01", previous="1.1.0"),
        ReleaseHost(host="lab02", previous="1.0.0"),
    ]
    kept = releases.plan_hosts(made.id, again, "1.1.0, 1.0.0", "rollout", NOW)
    assert kept.host("lab01") == ReleaseHost(host="lab01", previous="1.0.0", step="deploying")
    assert kept.from_version == "1.0.0"


def test_refused_moves_and_values_leave_the_record_untouched(releases: Releases) -> None:
    made = releases.create("app", "1.1.0", "alice", "alice", "alice", NOW)
    releases.move(made.id, "rolling-out", "rollout", NOW)
    with pytest.raises(IllegalTransitionError, match="cannot go from rolling-out to canceled"):
        releases.move(made.id, "canceled", "alice", NOW)
    assert releases.get(made.id).state == "rolling-out"
    assert len(releases.audit_trail(made.id)) == 2
    with pytest.raises(ValidationError, match="to_version"):
        releases.create("app", "1.0; rm -rf /", "alice", "alice", "alice", NOW)
    with pytest.raises(ValidationError, match="batch"):
        releases.create("app", "1.1.0", "alice", "alice", "alice", NOW, batch="0")
    with pytest.raises(RecordNotFoundError):
        releases.get("REL0000099")
    with pytest.raises(RecordNotFoundError):
        releases.get("REQ0000001")
    assert [r.id for r in releases.list()] == [made.id]


def test_nobody_carries_a_new_release_until_its_lease_is_taken(records_url: str) -> None:
    records = Records(records_url)
    made = records.releases.create("app", "1.1.0", "alice", "alice", "alice", NOW)
    assert records.releases.unclaimed() == [made.id]
    assert records.leases.take(f"release:{made.id}", "worker-1", datetime.now(UTC), 60)
    assert records.releases.unclaimed() == []
    records.releases.move(made.id, "canceled", "alice", NOW)
    records.leases.release(f"release:{made.id}", "worker-1")
    assert records.releases.unclaimed() == []
    assert records.releases.list(state=["canceled"], service="app")[0].id == made.id


@pytest.mark.parametrize(
    ("batch", "hosts", "size"),
    [("1", 5, 1), ("2", 5, 2), ("9", 5, 5), ("40%", 5, 2), ("10%", 5, 1), ("100%", 5, 5)],
)
def test_batch_sizes(batch: str, hosts: int, size: int) -> None:
    assert batch_size(batch, hosts) == size


def test_a_canary_goes_first_alone_then_batches() -> None:
    hosts = ["lab01", "lab02", "lab03", "lab04", "lab05"]
    assert plan_batches(hosts, "2", 1) == [["lab01"], ["lab02", "lab03"], ["lab04", "lab05"]]
    assert plan_batches(hosts, "2", 0) == [["lab01", "lab02"], ["lab03", "lab04"], ["lab05"]]
    assert plan_batches([], "2", 1) == []


@pytest.mark.parametrize("bad", ["0", "-1", "0%", "101%", "2.5", "1e3", "a", "", "%", "12345"])
def test_bad_batches_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ValueError, match="batch"):
        valid_batch(bad)
    with pytest.raises(ValidationError, match="batch"):
        ReleaseCreate(service="app", version="1.1.0", batch=bad)


def test_the_release_an_incident_came_after_is_the_newest_within_the_window(
    releases: Releases,
) -> None:
    window = timedelta(minutes=60)
    old = releases.create("app", "1.0.1", "alice", "alice", "alice", NOW)
    releases.move(old.id, "rolling-out", "r", NOW)
    releases.move(old.id, "deployed", "r", NOW + timedelta(minutes=1))
    new = releases.create("app", "1.1.0", "alice", "alice", "alice", NOW)
    releases.move(new.id, "rolling-out", "r", NOW + timedelta(minutes=10))
    other = releases.create("db", "2.0", "alice", "alice", "alice", NOW)
    releases.move(other.id, "rolling-out", "r", NOW + timedelta(minutes=20))

    def before(at: datetime):
        found = release_before(releases.recent(at - window), "app", at, window)
        return found and found.id

    assert before(NOW + timedelta(minutes=5)) == old.id
    # Still rolling out: any incident after it started may be its.
    assert before(NOW + timedelta(hours=5)) == new.id
    releases.move(new.id, "deployed", "r", NOW + timedelta(minutes=15))
    assert before(NOW + timedelta(minutes=70)) == new.id
    assert before(NOW + timedelta(minutes=76)) is None
    assert before(NOW - timedelta(minutes=1)) is None
    assert release_before(releases.recent(NOW), "web", NOW + timedelta(minutes=30), window) is None
    assert [r.id for r in releases.recent(NOW + timedelta(minutes=16))] == [other.id]

    linked = releases.link_incident(new.id, "INC0000003", "event-triage", NOW)
    assert releases.link_incident(new.id, "INC0000003", "event-triage", NOW) == linked
    assert linked.incidents == ["INC0000003"]
    assert releases.audit_trail(new.id)[-1].action == "release.incident_linked"
    assert [r.id for r in releases.with_incidents(NOW - timedelta(days=1))] == [new.id]
