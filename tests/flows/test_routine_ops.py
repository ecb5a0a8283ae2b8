"""Routine operations under a real Prefect server, against the real lab."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client

from opsflow.flows.routine_ops.gather_facts import gather_facts
from opsflow.flows.routine_ops.health_check import health_check
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.run import run_on_host

pytestmark = pytest.mark.usefixtures("ssh_credentials")


def latest_table(key: str) -> list[dict]:
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
        found = [a for a in artifact if a.key == key]
    assert found, f"no artifact {key}"
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data


def test_health_check_finds_the_stopped_service(lab, estate) -> None:
    broken = lab.hosts[3].name
    break_host(broken, "service", lab.directory)
    try:
        results = health_check(send_to_desk=False)
    finally:
        run_on_host(broken, ["/var/lib/app/bin/svc", "start"], lab.directory)
    by_host = {r.host: r for r in results}
    assert set(by_host) == {h.name for h in estate.hosts}
    assert not by_host[broken].healthy
    assert "connection refused" in by_host[broken].detail
    assert all(r.healthy for name, r in by_host.items() if name != broken)
    table = latest_table("health-check")
    assert {row["host"]: row["healthy"] for row in table}[broken] is False


def test_facts_come_back_for_every_host(estate) -> None:
    facts = gather_facts()
    assert {f.host for f in facts} == {h.name for h in estate.hosts}
    for f in facts:
        assert f.kernel.startswith("Linux ")
        assert f.mem_total_kb > 0 and f.uptime_s > 0
        assert any(d.mount == "/var/log/app" for d in f.disks)
    assert len(latest_table("host-facts")) == len(estate.hosts)
