"""A plain Prometheus alert, `up == 0` with only `instance` and `job`, restores the right CI.

No `host` or `service` label anywhere: a real Prometheus scrapes the lab's apps as most teams
scrape theirs, its alert goes through a real Alertmanager configured with the README's
receiver, and the estate's label contract (the default one) names the host from the instance's
address and the service from the job; the lab's `instance-down` rule (Alertmanager matchers)
classifies it, and the service's runbook restores it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import yaml

from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.people import token_file
from opsflow.tasks.services import check_service_health
from tests.support.alerting import alertmanager, prometheus, readme_yaml
from tests.support.waiting import wait_for

RESTORE_TIMEOUT_S = 90
PLAIN_LABELS = {"alertname", "instance", "job"}


def plain_rules() -> dict:
    """The one rule: any target down, no labels added."""
    rule = {"alert": "InstanceDown", "expr": "up == 0", "for": "0s"}
    return {"groups": [{"name": "plain", "interval": "1s", "rules": [rule]}]}


def scraped(url: str, count: int) -> bool:
    answer = requests.get(f"{url}/api/v1/targets?state=active", timeout=10).json()
    targets = answer["data"]["activeTargets"]
    return len(targets) == count and all(t["health"] == "up" for t in targets)


def restored(host: str, since: datetime):
    for incident in open_records().incidents.list(host=host, service="app"):
        if incident.opened_at >= since and incident.state == "Resolved":
            return incident
    return None


@pytest.mark.monitoring
def test_a_plain_up_alert_opens_and_restores_the_right_ci(lab, lab_desk, estate, tmp_path: Path):
    host = lab.hosts[2]
    receiver = yaml.safe_load(readme_yaml("# alertmanager.yml: opsflow as a receiver"))
    webhook = receiver["receivers"][0]["webhook_configs"][0]
    webhook["url"] = f"{lab_desk.url}/api/v1/events/alertmanager"
    webhook["http_config"]["authorization"]["credentials_file"] = str(
        token_file(lab.directory, "alertmanager")
    )
    receiver["route"].update(group_wait="0s", group_interval="1s")
    targets = [f"{h.address}:{h.app_port}" for h in lab.hosts]
    since = datetime.now(UTC)
    with alertmanager(receiver, tmp_path / "alertmanager") as am:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.url[7:]]}]}]},
            "scrape_configs": [{"job_name": "app", "static_configs": [{"targets": targets}]}],
        }
        with prometheus(config, plain_rules(), tmp_path / "prometheus") as prom:
            wait_for(lambda: scraped(prom.url, len(targets)), 60, "every app to be scraped")
            break_host(host.name, "service", lab.directory)
            incident = wait_for(
                lambda: restored(host.name, since), RESTORE_TIMEOUT_S, f"app on {host.name}"
            )
    assert (incident.symptom, incident.runbook) == ("service-down", "restart-service")
    assert incident.resolution_code == "auto-remediated"
    events = open_records().events.of_incident(incident.id)
    assert events and all(set(e.labels) == PLAIN_LABELS for e in events), [e.labels for e in events]
    assert {e.labels["instance"] for e in events} == {f"{host.address}:{host.app_port}"}
    assert {e.rule for e in events} == {"instance-down"}
    assert check_service_health.fn(estate.host(host.name), estate.service("app")).healthy
