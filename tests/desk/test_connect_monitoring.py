"""The README's "Connect your monitoring", as written: amtool accepts its receiver, and a real
Alertmanager so configured delivers firing and resolved alerts the desk stores, token and
all; its Prometheus relabel example gives the targets the `host` label it says; its scrape
config has a real Prometheus scrape the desk and load opsflow's rules, which alert on a
process that does not answer; its route sends those alerts to the on-call, not opsflow."""

from __future__ import annotations

import subprocess
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
from opsflow.monitoring import rules_path
from tests.support.alerting import alertmanager, check, prometheus, readme_yaml
from tests.support.factories import TOKENS
from tests.support.serving import free_port, serve_app
from tests.support.waiting import wait_for

RECEIVER = "# alertmanager.yml: opsflow as a receiver"
RELABEL = '# prometheus.yml: every target of the job gets host="web1" for web1.internal:18080'
SCRAPE = "# prometheus.yml: scrape opsflow and load the rules it ships"
SELF_ROUTE = "# alertmanager.yml: opsflow's alerts on itself go to the on-call, never into opsflow"


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


@pytest.mark.monitoring
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


@pytest.mark.monitoring
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


@pytest.mark.monitoring
def test_the_readme_scrape_config_scrapes_the_desk_and_its_rules_alert_on_a_silent_worker(
    served: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(readme_yaml(SCRAPE))
    [shipped] = config.pop("rule_files")
    assert shipped.endswith("/opsflow/monitoring/opsflow-rules.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"opsflow-desk", "opsflow-worker"}
    desk = served.removeprefix("http://")
    silent = f"127.0.0.1:{free_port()}"  # a worker that does not answer
    jobs["opsflow-desk"]["static_configs"] = [{"targets": [desk]}]
    jobs["opsflow-worker"]["static_configs"] = [{"targets": [silent]}]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}  # the test's pace
    rules = yaml.safe_load(rules_path().read_text())

    with prometheus(config, rules, tmp_path / "prometheus") as server:

        def api(path: str, **params: str) -> dict:
            answer = requests.get(f"{server.url}/api/v1/{path}", params=params, timeout=10)
            return answer.json()["data"]

        def up(job: str) -> list[str]:
            return [r["value"][1] for r in api("query", query=f'up{{job="{job}"}}')["result"]]

        wait_for(lambda: up("opsflow-desk") == ["1"], 30, "the desk's target to be up")
        wait_for(lambda: up("opsflow-worker") == ["0"], 30, "the silent worker to be down")
        loaded = {rule["name"] for group in api("rules")["groups"] for rule in group["rules"]}
        assert {"OpsflowProcessDown", "OpsflowTriageBacklog", "OpsflowApprovalsStale"} <= loaded
        alert = wait_for(
            lambda: next(
                (
                    a
                    for a in api("alerts")["alerts"]
                    if a["labels"]["alertname"] == "OpsflowProcessDown"
                ),
                None,
            ),
            30,
            "OpsflowProcessDown about the silent worker",
        )
        assert alert["labels"]["job"] == "opsflow-worker" and alert["labels"]["instance"] == silent
        assert alert["labels"]["source"] == "opsflow-self"
        assert api("query", query="opsflow_records_readable")["result"][0]["value"][1] == "1"


def test_the_readme_route_sends_opsflow_alerts_on_itself_to_the_on_call(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(readme_yaml(SELF_ROUTE))
    check([AMTOOL, "check-config", str(path)])

    def receiver(*labels: str) -> str:
        done = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={path}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout.strip()

    assert receiver("source=opsflow-self", "alertname=OpsflowTriageBacklog") == "on-call"
    assert receiver("alertname=InstanceDown", "job=app") == "opsflow"
