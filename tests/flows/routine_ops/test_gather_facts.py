"""Facts are kept per host as history, shown by `opsflow inventory show`, and drift reported."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from opsflow.cli.inventory import inventory_show
from opsflow.flows.routine_ops.gather_facts import gather_facts
from opsflow.inventory.loader import load_estate
from opsflow.itsm.drift import find_drift
from opsflow.itsm.store.facts import FactsSnapshot
from opsflow.itsm.store.records import open_records
from opsflow.tasks.fanout import FanOutError
from tests.support.prefect_api import latest_artifact

pytestmark = pytest.mark.usefixtures("ssh_credentials")

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_drift_names_unreachable_hosts_and_missing_services(estate) -> None:
    names = [h.name for h in estate.hosts]
    snapshots = [
        FactsSnapshot(host=names[0], gathered_at=T0, reachable=False, error="connection refused"),
        FactsSnapshot(host=names[1], gathered_at=T0, reachable=True, services={"app": "missing"}),
        FactsSnapshot(host=names[1], gathered_at=T0 - timedelta(hours=1), reachable=False),
        FactsSnapshot(host=names[2], gathered_at=T0, reachable=True, services={"app": "stopped"}),
        FactsSnapshot(host=names[3], gathered_at=T0, reachable=True, services={"app": "running"}),
    ]
    drift = {(d.host, d.kind) for d in find_drift(estate, snapshots)}
    assert drift == {
        (names[0], "host-unreachable"),
        (names[1], "service-missing"),
        (names[2], "service-stopped"),
        (names[4], "host-not-gathered"),
    }


def test_facts_are_kept_as_history_and_shown(estate, capsys) -> None:
    host = estate.hosts[0].name
    facts = open_records().facts
    before = len(facts.history(host, limit=1000))
    gather_facts()
    gather_facts()
    history = facts.history(host, limit=1000)
    assert len(history) == before + 2
    assert history[0].gathered_at > history[1].gathered_at
    assert history[0].reachable and history[0].services == {"app": "running"}
    assert history[0].facts["kernel"].startswith("Linux ")
    assert latest_artifact("inventory-drift").startswith("**No drift:**")

    capsys.readouterr()
    inventory_show(host, as_json=True)
    shown = json.loads(capsys.readouterr().out)
    assert shown["inventory"]["services"] == ["app"]
    assert shown["latest"]["facts"]["os"] == history[0].facts["os"]
    assert len(shown["history"]) >= 2 and shown["drift"] == []

    inventory_show(host, as_json=False)
    text = capsys.readouterr().out
    assert "latest facts" in text and "last" in text and "No drift" in text


def test_gather_facts_reports_drift(lab, tmp_path: Path) -> None:
    """A host that does not answer and a service its host lacks are reported as drift."""
    estate_dir = tmp_path / "estate"
    shutil.copytree(lab.estate_dir, estate_dir)
    hosts = yaml.safe_load((estate_dir / "hosts.yaml").read_text())
    some_key = " ".join((estate_dir / "known_hosts").read_text().split()[1:3])
    hosts["hosts"].append(
        {"name": "ghost", "address": "127.0.20.250", "port": 2222, "host_key": some_key}
    )
    (estate_dir / "hosts.yaml").write_text(yaml.safe_dump(hosts))
    services = yaml.safe_load((estate_dir / "services.yaml").read_text())
    services["services"].append(
        {
            "name": "billing",
            "hosts": [lab.hosts[1].name],
            "health_check": {"kind": "http", "port": 18081},
            "control": {
                "start": ["/opt/billing/bin/billing", "start"],
                "stop": ["/opt/billing/bin/billing", "stop"],
                "status": ["/opt/billing/bin/billing", "status"],
            },
        }
    )
    (estate_dir / "services.yaml").write_text(yaml.safe_dump(services))
    load_estate(estate_dir)

    with pytest.raises(FanOutError, match="ghost"):
        gather_facts(estate_dir=str(estate_dir))

    ghost = open_records().facts.latest("ghost")
    assert ghost is not None and not ghost.reachable and "refused" in (ghost.error or "")
    report = latest_artifact("inventory-drift")
    assert "| ghost | host-unreachable |" in report
    assert f"| {lab.hosts[1].name} | service-missing | billing |" in report
    assert report.startswith("**2 differences**")


def test_versions_are_facts_and_hosts_of_one_service_on_other_versions_are_drift(
    lab, estate, initial_release
) -> None:
    from opsflow.tasks.releases import put_release

    odd = estate.hosts[1]
    put_release.fn(odd, estate.service("app"), "1.1.0")  # in place; the app runs on, unchanged
    gather_facts()
    facts = open_records().facts
    assert facts.latest(odd.name).facts["releases"] == {"app": "1.1.0"}
    assert facts.latest(estate.hosts[0].name).facts["releases"] == {"app": "1.0.0"}
    report = latest_artifact("inventory-drift")
    assert report.startswith("**1 differences**"), report
    assert f"| {odd.name} | version-differs | app | app 1.1.0 here; 1.0.0 on the others" in report

    put_release.fn(odd, estate.service("app"), "1.0.0")
    gather_facts()
    assert facts.latest(odd.name).facts["releases"] == {"app": "1.0.0"}
    assert len(facts.history(odd.name, limit=2)) == 2  # the 1.1.0 snapshot is kept
    assert facts.history(odd.name, limit=2)[1].facts["releases"] == {"app": "1.1.0"}
    assert latest_artifact("inventory-drift").startswith("**No drift:**")


def test_facts_come_back_for_every_host(estate) -> None:
    facts = gather_facts()
    assert {f.host for f in facts} == {h.name for h in estate.hosts}
    for f in facts:
        assert f.kernel.startswith("Linux ")
        assert f.mem_total_kb > 0 and f.uptime_s > 0
        assert any(d.mount == "/var/log/app" for d in f.disks)
    assert len(latest_artifact("host-facts")) == len(estate.hosts)
