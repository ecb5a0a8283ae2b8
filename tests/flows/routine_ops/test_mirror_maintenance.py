"""mirror-maintenance-windows against a real Alertmanager: the estate's planned windows become
silences (ahead of time for a window ahead), a second run changes nothing, and a window taken
out of maintenance.yaml, or moved, has its silences expired by the next run."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from opsflow.flows.routine_ops.mirror_maintenance import mirror_maintenance_windows
from tests.support.alerting import alertmanager, amtool

pytestmark = [
    pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted:UserWarning"),
    pytest.mark.monitoring,  # its own Alertmanager
]

NOW = datetime.now(UTC).replace(microsecond=0)
NO_ALERTS = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}


def write_estate(directory: Path, am_url: str, windows: list[dict]) -> Path:
    """An estate of three hosts whose Alertmanager is at `am_url`, with these windows."""
    key = directory.parent / "key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    directory.mkdir(exist_ok=True)
    hosts = [
        {"name": f"db{i}", "address": f"127.0.97.{i}", "host_key": public, "groups": ["db"]}
        for i in (1, 2)
    ] + [{"name": "web1", "address": "127.0.97.9", "host_key": public}]
    files = {
        "estate.yaml": {"name": "mirrored", "alertmanager": {"url": am_url}},
        "hosts.yaml": {"hosts": hosts},
        "maintenance.yaml": {"maintenance": windows},
    }
    for name, data in files.items():
        (directory / name).write_text(yaml.safe_dump(data))
    return directory


def window(name: str, start: timedelta, end: timedelta, **where) -> dict:
    return {"name": name, "start": NOW + start, "end": NOW + end, "reason": "planned", **where}


def silences(am, *flags: str) -> dict[str, list[dict]]:
    """Alertmanager's silences by the window their comment names."""
    found: dict[str, list[dict]] = {}
    for silence in amtool(am, "silence", "query", *flags):
        found.setdefault(silence["comment"].split()[3], []).append(silence)
    return found


def test_planned_windows_become_silences_and_cancelled_ones_expire(
    tmp_path: Path, prefect_server: None
) -> None:
    with alertmanager(NO_ALERTS, tmp_path / "am") as am:
        now_on = window("db-upgrade", -timedelta(minutes=5), timedelta(hours=1), group="db")
        ahead = window("web-move", timedelta(hours=2), timedelta(hours=3), hosts=["web1"])
        over = window("last-week", -timedelta(days=7), -timedelta(days=6), hosts=["web1"])
        estate = write_estate(tmp_path / "estate", am.url, [now_on, ahead, over])

        first = mirror_maintenance_windows(str(estate))
        assert sum(c.changed for c in first) == 4  # two per window: host, then instance
        shown = silences(am)
        assert sorted(shown) == ["db-upgrade", "web-move"]
        assert {s["status"]["state"] for s in shown["web-move"]} == {"pending"}
        assert {s["status"]["state"] for s in shown["db-upgrade"]} == {"active"}
        hosts = [m for s in shown["db-upgrade"] for m in s["matchers"] if m["name"] == "host"]
        assert {"name": "host", "value": "db1|db2", "isRegex": True, "isEqual": True} in hosts
        assert [c.changed for c in mirror_maintenance_windows(str(estate))] == [False] * 4

        moved = {**ahead, "end": NOW + timedelta(hours=4)}
        write_estate(tmp_path / "estate", am.url, [moved])
        third = mirror_maintenance_windows(str(estate))
        assert sum(c.changed for c in third) == 6  # two made for the move, four expired
        assert sorted(silences(am)) == ["web-move"]
        ends = {datetime.fromisoformat(s["endsAt"]) for s in silences(am)["web-move"]}
        assert ends == {NOW + timedelta(hours=4)}
        assert len(silences(am, "--expired")["db-upgrade"]) == 2
