"""The health check under a real Prefect server, against the real lab."""

from __future__ import annotations

import pytest

from opsflow.flows.routine_ops.health_check import health_check
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.run import run_on_host
from tests.support.prefect_api import latest_artifact

pytestmark = pytest.mark.usefixtures("ssh_credentials")


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
    table = latest_artifact("health-check")
    assert {row["host"]: row["healthy"] for row in table}[broken] is False
