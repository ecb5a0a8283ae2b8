"""The remediation budget: past it, restoration touches nothing and calls a human."""

from __future__ import annotations

import pytest
import yaml

from opsflow.flows.incident_restoration import incident_restoration
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import run_on_host
from tests.support.factories import open_service_down
from tests.support.waiting import wait_for


@pytest.fixture
def no_budget(lab, lab_desk):
    path = lab.estate_dir / "estate.yaml"
    original = path.read_text()
    path.write_text(yaml.safe_dump({**yaml.safe_load(original), "remediation_budget": 0}))
    yield
    path.write_text(original)


def app_pid(lab, host: str) -> str:
    return run_on_host(host, ["cat", "/var/lib/app/app.pid"], lab.directory).stdout.strip()


def test_spent_budget_escalates_without_acting(lab, pager, no_budget) -> None:
    host = lab.hosts[1].name
    pid_before = app_pid(lab, host)
    incident = open_service_down(host, "budget test")
    pages_before = len(pager.pages)
    assert incident_restoration(incident.number) == "In Progress"
    after = open_records().incidents.get(incident.id)
    assert after.assigned_to == "alice"
    worklog = " ".join(w.text for w in open_records().worklog.entries(incident.id))
    assert "remediation budget spent" in worklog
    assert "runbook restart-service started" not in worklog
    assert app_pid(lab, host) == pid_before
    # Other tests' pages (an access notice, say) may arrive meanwhile: look for this one.
    wait_for(
        lambda: any(
            incident.number in page["body"]["subject"] for page in pager.pages[pages_before:]
        ),
        20,
        f"the page about {incident.number}",
    )
