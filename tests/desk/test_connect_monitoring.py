"""The README's "Connect your monitoring", as written: amtool accepts its receiver, and a real
Alertmanager so configured delivers firing and resolved alerts the desk stores, token and
all; its Prometheus relabel example gives the targets the `host` label it says."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.itsm.store.records import Records
from opsflow.lab.monitoring_config import AMTOOL
from tests.support.alerting import alertmanager, check, prometheus, readme_yaml
from tests.support.factories import TOKENS
from tests.support.serving import serve_app
from tests.support.waiting import wait_for

RECEIVER = "# alertmanager.yml: opsflow as a receiver"
RELABEL = '# prometheus.yml: every target of the job gets host="web1" for web1.internal:18080'


@pytest.fixture
def served(store: Records, desk_estate: Path) -> Iterator[str]:
    """The desk app served by uvicorn on a free port, for a real Alertmanager to post to."""
    app = create_app(store, EstateCache(desk_estate))
    with serve_app(app, log_level="error") as url:
        yield url


def test_the_readme_receiver_passes_amtool(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(readme_yaml(RECEIVER))
    check([AMTOOL, "check-config", str(path)])
    webhook = yaml.safe_load(path.read_text())["receivers"][0]["webhook_configs"][0]
    assert webhook["send_resolved"] is True and webhook["max_alerts"] > 0
    assert "credentials_file" in webhook["http_config"]["authorization"]


def test_the_desk_stores_what_the_readme_receiver_sends(
    served: str, store: Records, tmp_path: Path
) -> None:
    config = yaml.safe_load(readme_yaml(RECEIVER))
    webhook = config["receivers"][0]["webhook_configs"][0]
    webhook["url"] = f"{served}/api/v1/events/alertmanager"
    token = tmp_path / "opsflow-token"
    token.write_text(TOKENS["max"])
    token.chmod(0o600)
    webhook["http_config"]["authorization"]["credentials_file"] = str(token)
    config["route"].update(group_wait="0s", group_interval="1s")  # the test's pace only
    labels = {"alertname": "InstanceDown", "instance": "127.0.99.2:9100", "job": "app"}
    now = datetime.now(UTC)

    def stored(status: str):
        return [e for e in store.events.pending(100) if e.status == status]

    with alertmanager(config, tmp_path / "alertmanager") as am:
        alert = {"labels": labels, "startsAt": now.isoformat()}
        requests.post(f"{am.url}/api/v2/alerts", json=[alert], timeout=10).raise_for_status()
        [firing] = wait_for(lambda: stored("firing"), 30, "the firing alert at the desk")
        ended = {**alert, "endsAt": (now + timedelta(seconds=1)).isoformat()}
        requests.post(f"{am.url}/api/v2/alerts", json=[ended], timeout=10).raise_for_status()
        [resolved] = wait_for(lambda: stored("resolved"), 30, "the resolved alert at the desk")
    assert (firing.source, firing.labels) == ("alertmanager", labels)
    assert resolved.fingerprint == firing.fingerprint


def test_the_readme_relabel_example_names_the_host(tmp_path: Path) -> None:
    config = yaml.safe_load(readme_yaml(RELABEL))
    with prometheus(config, {"groups": []}, tmp_path / "prometheus") as server:

        def targets() -> list[dict]:
            answer = requests.get(f"{server.url}/api/v1/targets", timeout=10).json()
            return answer["data"]["activeTargets"]

        found = wait_for(lambda: len(targets()) == 2 and targets(), 30, "both targets")
    assert sorted((t["labels"]["host"], t["labels"]["instance"]) for t in found) == [
        ("web1", "web1.internal:18080"),
        ("web2", "web2.internal:18080"),
    ]
