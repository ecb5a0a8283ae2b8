"""Maintenance windows mirrored as silences in a real Alertmanager with two receivers.

A window opened makes its silences (seen by amtool, comment naming the window, ending with
it), every receiver stays quiet for the alerts they match while others go through; a
window closed early moves their end with it, a cancelled one expires them and the held
alerts go out. Mirroring twice makes nothing twice; Alertmanager down costs the mirror, not
the work; a credentials block gets through Alertmanager's basic auth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import pytest
import requests
from pydantic import SecretStr

from opsflow.blocks.alertmanager import AlertmanagerCredentials
from opsflow.blocks.registration import register_block_types
from opsflow.inventory.matchers import parse_matcher
from opsflow.inventory.models import AlertmanagerLink, Estate, EstateSettings, Host
from opsflow.itsm.store.records import open_records
from opsflow.tasks.maintenance import (
    end_mirror,
    maintenance_window,
    mirror_window,
    open_maintenance_window,
)
from opsflow.tasks.silences import AlertmanagerRefusedError, create_silence, end_silence
from tests.support.alerting import Daemon, Receiver, alertmanager, amtool, webhook_receiver
from tests.support.serving import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted:UserWarning")

HOSTS = [Host(name=f"web{i}", address=f"127.0.98.{i}") for i in (1, 2, 3)]


@dataclass
class Pipeline:
    """A real Alertmanager sending every alert to two receivers (a pager and a chat)."""

    am: Daemon
    pager: Receiver
    chat: Receiver

    def estate(self, **link: str) -> Estate:
        """An estate of three hosts whose Alertmanager is this one."""
        settings = EstateSettings(alertmanager=AlertmanagerLink(url=self.am.url, **link))
        return Estate(hosts=HOSTS, settings=settings)

    def fire(self, *label_sets: dict[str, str]) -> None:
        alerts = [{"labels": {"alertname": "Down", **labels}} for labels in label_sets]
        requests.post(f"{self.am.url}/api/v2/alerts", json=alerts, timeout=10).raise_for_status()

    def silenced_by(self, **labels: str) -> list[str]:
        """The silences Alertmanager says hold the alert with these labels."""
        answer = requests.get(f"{self.am.url}/api/v2/alerts", timeout=10).json()
        held = [a for a in answer if labels.items() <= a["labels"].items()]
        return [s for a in held for s in a["status"]["silencedBy"]]

    def received(self, **labels: str) -> bool:
        return bool(self.pager.got(**labels) and self.chat.got(**labels))


def same_time(shown: str, expected: datetime) -> bool:
    """Whether Alertmanager's time (milliseconds) is `expected`."""
    return abs(datetime.fromisoformat(shown) - expected) < timedelta(milliseconds=1)


def two_receivers(pager: Receiver, chat: Receiver) -> dict:
    return {
        "route": {
            "receiver": "pager",
            "group_by": ["alertname", "host", "instance"],
            "group_wait": "0s",
            "group_interval": "1s",
            "routes": [{"receiver": "chat", "continue": True}, {"receiver": "pager"}],
        },
        "receivers": [
            {"name": "pager", "webhook_configs": [{"url": pager.url}]},
            {"name": "chat", "webhook_configs": [{"url": chat.url}]},
        ],
    }


@pytest.fixture
def pipeline(tmp_path: Path, prefect_server: None, records_database: str) -> Iterator[Pipeline]:
    with (
        webhook_receiver() as pager,
        webhook_receiver() as chat,
        alertmanager(two_receivers(pager, chat), tmp_path / "alertmanager") as am,
    ):
        yield Pipeline(am, pager, chat)


@pytest.mark.monitoring  # its own Alertmanager (`pipeline`)
def test_a_window_silences_its_hosts_for_every_receiver_until_cancelled(pipeline) -> None:
    estate = pipeline.estate()
    with maintenance_window(["web1", "web2"], "kernel update", 30, estate=estate) as window:
        assert window.silence_ids is not None and len(window.silence_ids) == 2
        shown = {s["id"]: s for s in amtool(pipeline.am, "silence", "query")}
        assert set(shown) == set(window.silence_ids)
        for silence in shown.values():
            assert silence["createdBy"] == "opsflow"
            assert silence["comment"] == f"opsflow maintenance window {window.label}: kernel update"
            assert same_time(silence["endsAt"], window.end)
        assert f"#{window.id}" in window.label

        pipeline.fire(
            {"host": "web1"},
            {"instance": "127.0.98.2:9100", "job": "node"},
            {"host": "web3"},
            {"instance": "127.0.98.3:9100", "job": "node"},
        )
        wait_for(lambda: pipeline.received(host="web3"), 30, "web3's alert at both receivers")
        wait_for(lambda: pipeline.received(instance="127.0.98.3:9100"), 30, "web3's instance")
        assert set(pipeline.silenced_by(host="web1")) <= set(window.silence_ids)
        assert pipeline.silenced_by(host="web1") and pipeline.silenced_by(
            instance="127.0.98.2:9100"
        )
        assert pipeline.silenced_by(host="web3") == []
        assert not (pipeline.pager.got(host="web1") or pipeline.chat.got(host="web1"))
        cancelled = open_records().maintenance.close(window.id, *[datetime.now(UTC)] * 2)
        end_mirror(cancelled.id, estate)
        expired = {s["id"] for s in amtool(pipeline.am, "silence", "query", "--expired")}
        assert set(window.silence_ids) <= expired
        assert amtool(pipeline.am, "silence", "query") == []
        wait_for(lambda: pipeline.received(host="web1"), 30, "the held alert, once cancelled")
        wait_for(lambda: pipeline.received(instance="127.0.98.2:9100"), 30, "the held instance")


@pytest.mark.monitoring  # its own Alertmanager (`pipeline`)
def test_closing_a_window_early_moves_its_silences_end(pipeline) -> None:
    estate = pipeline.estate()
    window = mirror_window(open_maintenance_window("patching", ["web3"], "patch", 60).id, estate)
    end = datetime.now(UTC) + timedelta(minutes=5)
    open_records().maintenance.close(window.id, end, datetime.now(UTC))
    ended = end_mirror(window.id, estate)
    assert ended.silence_ids == window.silence_ids  # changed in place, same silences
    for silence in amtool(pipeline.am, "silence", "query"):
        assert same_time(silence["endsAt"], end)
    again = end_silence(estate.settings.alertmanager, window.silence_ids[0], end)
    assert not again.changed


@pytest.mark.monitoring  # its own Alertmanager (`pipeline`)
def test_mirroring_twice_makes_nothing_twice(pipeline) -> None:
    estate = pipeline.estate()
    window = open_maintenance_window("backup", ["web1"], "cold backup", 10)
    first = mirror_window(window.id, estate)
    assert mirror_window(window.id, estate).silence_ids == first.silence_ids
    # A creation whose answer was lost: retried, it finds the silence it made.
    link, start, end = estate.settings.alertmanager, first.start, first.end
    comment = f"opsflow maintenance window {first.label}: cold backup"
    matchers = [parse_matcher('host=~"web1"')]
    retried = create_silence(link, matchers, start, end, comment)
    assert (retried.changed, retried.silence_id) == (False, first.silence_ids[0])
    assert len(amtool(pipeline.am, "silence", "query")) == 2


def test_alertmanager_down_costs_the_mirror_not_the_work(records_database, prefect_server) -> None:
    link = AlertmanagerLink(url=f"http://127.0.0.1:{free_port()}", timeout_s=1)
    estate = Estate(hosts=HOSTS, settings=EstateSettings(alertmanager=link))
    with maintenance_window(["web2"], "work", 10, grace_s=0, estate=estate) as window:
        assert window.silence_ids is None
    assert open_records().maintenance.get(window.id).closed_at is not None


@pytest.mark.monitoring  # its own Alertmanager (`pipeline`)
def test_a_credentials_block_passes_alertmanager_s_basic_auth(pipeline, tmp_path) -> None:
    register_block_types()
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = {"basic_auth_users": {"opsflow": hashed}}
    with alertmanager(two_receivers(pipeline.pager, pipeline.chat), tmp_path / "am", web) as am:
        link = AlertmanagerLink(url=am.url, credentials="am-basic")
        estate = Estate(hosts=HOSTS, settings=EstateSettings(alertmanager=link))
        window = open_maintenance_window("patching", ["web1"], "patch", 10)
        AlertmanagerCredentials(username="opsflow", password=SecretStr("wrong")).save(
            "am-basic", overwrite=True
        )
        with pytest.raises(AlertmanagerRefusedError, match="401"):
            mirror_window(window.id, estate)
        AlertmanagerCredentials(username="opsflow", password=SecretStr("s3cret")).save(
            "am-basic", overwrite=True
        )
        assert len(mirror_window(window.id, estate).silence_ids) == 2


@pytest.mark.monitoring  # its own Alertmanager (`pipeline`)
def test_a_silence_ended_before_it_starts_is_expired(pipeline) -> None:
    link = pipeline.estate().settings.alertmanager
    start = datetime.now(UTC) + timedelta(hours=1)
    made = create_silence(
        link, [parse_matcher('host="web3"')], start, start + timedelta(hours=1), "x"
    )
    [pending] = amtool(pipeline.am, "silence", "query")
    assert pending["status"]["state"] == "pending"
    ended = end_silence(link, made.silence_id, start - timedelta(minutes=30))
    assert (ended.changed, ended.detail) == (True, "expired")
    assert amtool(pipeline.am, "silence", "query") == []
