"""The lab's real Prometheus watches opsflow itself: it scrapes a running desk, evaluates
the rules opsflow ships, and a backlog no worker drains pages the on-call, not the desk."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from opsflow.itsm.records import EventIn
from opsflow.itsm.store.records import Records
from opsflow.lab.monitoring import (
    SelfWatch,
    firing_alerts,
    monitoring_down,
    query,
    wait_until_scraped,
)
from opsflow.lab.monitoring_config import DESK_JOB, ON_CALL, check_configs
from opsflow.lab.pager import PagerServer
from opsflow.monitoring import SELF_SOURCE
from tests.support.alerting import watch_lab
from tests.support.serving import desk_process
from tests.support.waiting import wait_for


@pytest.fixture
def pager(tmp_path: Path) -> Iterator[PagerServer]:
    """The on-call's pager of this test alone."""
    server = PagerServer(("127.0.0.1", 0), tmp_path / "pages.log")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.parametrize("records_url", ["postgresql"], indirect=True)
def test_a_backlog_nobody_triages_pages_the_on_call_not_the_desk(
    prefect_server, lab, records_url: str, pager: PagerServer, tmp_path: Path, monkeypatch
) -> None:
    # Records of this test's own, which no worker watches: what is stored there stays pending.
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", records_url)
    with desk_process(lab.estate_dir, tmp_path / "desk.log") as desk:
        address = urlsplit(desk.url)
        watch = watch_lab(
            lab,
            desk.url,
            directory=tmp_path / "monitoring",
            watch_opsflow=SelfWatch(
                desk=(f"{address.hostname}:{address.port}",), workers=(), pager_url=pager.url
            ),
        )
        try:
            check_configs(watch.directory)
            routes = yaml.safe_load((watch.directory / "alertmanager.yml").read_text())["route"]
            assert routes["routes"][0]["matchers"] == [f'source="{SELF_SOURCE}"']
            wait_until_scraped(watch, timeout_s=60)
            [desk_up] = query(watch, f'up{{job="{DESK_JOB}"}}')
            assert desk_up["value"][1] == "1"
            rules = requests.get(f"{watch.prometheus_url}/api/v1/rules", timeout=10).json()
            loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
            assert {"OpsflowTriageBacklog", "OpsflowEventsFailed"} <= loaded
            assert pager.pages == []

            # An event that arrived two minutes ago and that no worker has triaged since.
            arrived = datetime.now(UTC) - timedelta(minutes=2)
            stuck = EventIn(
                source="test", fingerprint="stuck", status="firing", occurred_at=arrived, labels={}
            )
            store = Records(records_url)
            assert store.events.store([stuck], arrived) == (1, 0)

            [page] = pager.wait_for(1, timeout_s=60)[:1]
            alerts = page["body"]["alerts"]
            assert [a["labels"]["alertname"] for a in alerts] == ["OpsflowTriageBacklog"]
            assert alerts[0]["labels"]["source"] == SELF_SOURCE
            assert alerts[0]["status"] == "firing"
            # Alertmanager's own account of where it sends the alert: the on-call alone.
            [routed] = [a for a in firing_alerts(watch) if a["labels"].get("source") == SELF_SOURCE]
            assert [r["name"] for r in routed["receivers"]] == [ON_CALL]
            # An alert for the desk, raised after opsflow's own had gone out: once it is at
            # the desk, a copy of opsflow's alert sent there with it would be there too.
            canary = {"alertname": "DeskCanary", "severity": "info"}
            posted = requests.post(
                f"{watch.alertmanager_url}/api/v2/alerts", json=[{"labels": canary}], timeout=10
            )
            assert posted.status_code == 200, posted.text

            def at_desk() -> list[str | None] | None:
                names = [e.labels.get("alertname") for e in store.events.pending()]
                return names if "DeskCanary" in names else None

            names = wait_for(at_desk, 30, "the canary alert to reach the desk")
            others = [name for name in names if name != "DeskCanary"]
            assert others == [None], f"opsflow's alert on itself reached the desk: {names}"
        finally:
            monitoring_down(watch.directory)
