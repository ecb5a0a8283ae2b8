"""The patch report lists what apt on each lab host says it could upgrade, or says none."""

from __future__ import annotations

import pytest

from opsflow.flows.routine_ops.patch_report import patch_report
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.packages import parse_upgradable
from tests.support.prefect_api import latest_artifact

pytestmark = pytest.mark.usefixtures("ssh_credentials")

APT_LINES = """Listing...
bash/oldstable 5.2.15-2+b13 amd64 [upgradable from: 5.2.15-2+b8]
openssl/oldstable-security,oldstable 3.0.17-1~deb12u3 amd64 [upgradable from: 3.0.16-1~deb12u1]
"""


def test_apt_listing_is_parsed() -> None:
    bash, openssl = parse_upgradable(APT_LINES)
    assert (bash.name, bash.current, bash.candidate, bash.security) == (
        "bash",
        "5.2.15-2+b8",
        "5.2.15-2+b13",
        False,
    )
    assert openssl.security and openssl.suites == ["oldstable-security", "oldstable"]
    assert parse_upgradable("Listing...\n") == []


def test_patch_report_lists_the_lab_s_upgradable_packages(lab, estate) -> None:
    statuses = patch_report()
    assert [s.host for s in statuses] == [h.name for h in estate.hosts]
    truth = run_on_host(lab.hosts[0].name, ["apt", "list", "--upgradable"])
    expected = sorted(p.name for p in parse_upgradable(truth.stdout))
    assert [p.name for p in statuses[0].packages] == expected
    rows = latest_artifact("patch-report")
    first = next(r for r in rows if r["host"] == lab.hosts[0].name)
    assert first["upgradable"] == len(expected)
    assert first["packages"] == (", ".join(expected)[:1000] or "none")
    detail = latest_artifact("patch-report-detail")
    heading = f"## {lab.hosts[0].name}: " + (
        "none" if not expected else f"{len(expected)} upgradable"
    )
    assert heading in detail
