"""Maintenance windows in the records: which hosts a window covers, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opsflow.itsm.store.records import Records

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_a_declared_window_covers_its_hosts_for_its_time_only(store: Records) -> None:
    windows = store.maintenance
    window = windows.declare(
        "backup-services", ["lab02", "lab01"], "cold backup", T0, T0 + timedelta(hours=1)
    )
    assert window.hosts == ["lab01", "lab02"]
    assert windows.active("lab01", T0 + timedelta(minutes=5)) == [window.label]
    assert windows.active("lab03", T0 + timedelta(minutes=5)) == []
    assert windows.active("lab01", T0 - timedelta(seconds=1)) == []
    assert windows.active("lab01", T0 + timedelta(hours=1)) == []

    closed = windows.close(window.id, T0 + timedelta(minutes=10), T0 + timedelta(minutes=9))
    assert closed.end == T0 + timedelta(minutes=10)
    assert windows.active("lab01", T0 + timedelta(minutes=11)) == []
    # Closing again, or later than declared, never extends it.
    windows.close(window.id, T0 + timedelta(hours=5), T0 + timedelta(hours=5))
    assert windows.get(window.id).end == T0 + timedelta(minutes=10)

    batch = windows.index([T0 + timedelta(minutes=1), T0 + timedelta(minutes=30)])
    assert batch.covering("lab02", T0 + timedelta(minutes=1)) == window.label
    assert batch.covering("lab02", T0 + timedelta(minutes=30)) is None
    assert batch.covering(None, T0 + timedelta(minutes=1)) is None


def test_the_windows_a_run_left_open_are_found_by_its_run(store: Records) -> None:
    windows = store.maintenance
    hour = timedelta(hours=1)
    dead = windows.declare("deploy-release", ["lab01"], "step", T0, T0 + hour, "run-dead")
    done = windows.declare("deploy-release", ["lab02"], "step", T0, T0 + hour, "run-dead")
    windows.close(done.id, T0 + timedelta(minutes=2), T0 + timedelta(minutes=1))
    lapsed = windows.declare(
        "deploy-release", ["lab03"], "step", T0, T0 + timedelta(minutes=3), "run-dead"
    )
    other = windows.declare("backup-services", ["lab01"], "backup", T0, T0 + hour, "run-alive")
    windows.declare("backup-services", ["lab04"], "manual", T0, T0 + hour)

    at = T0 + timedelta(minutes=5)
    assert [w.id for w in windows.left_open(["run-dead"], at)] == [dead.id]
    assert [w.id for w in windows.left_open(["run-dead"], T0)] == [dead.id, lapsed.id]
    assert [w.id for w in windows.left_open(["run-dead", "run-alive"], at)] == [dead.id, other.id]
    assert windows.left_open([], at) == []
    assert windows.left_open(["no-such-run"], at) == []

    windows.close(dead.id, at, at)
    assert windows.left_open(["run-dead"], at) == []
    assert windows.active("lab01", at) == [other.label]
