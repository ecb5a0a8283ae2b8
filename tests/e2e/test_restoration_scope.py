"""A runbook acts only on a host where the incident's service runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from opsflow.flows.incident_restoration import incident_restoration
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import SVC, run_on_host
from tests.support.factories import open_service_down


@pytest.fixture
def app_not_on_last_host(lab, lab_desk) -> Iterator[str]:
    """The estate's app runs on every lab host but the last; that host's name."""
    path: Path = lab.estate_dir / "services.yaml"
    original = path.read_text()
    services = yaml.safe_load(original)
    [app] = services["services"]
    outside = lab.hosts[-1].name
    app.pop("group")
    app["hosts"] = [h.name for h in lab.hosts if h.name != outside]
    path.write_text(yaml.safe_dump(services, sort_keys=False))
    yield outside
    path.write_text(original)


def test_alert_for_a_host_outside_the_service_runs_nothing_there(
    lab, pager, app_not_on_last_host: str
) -> None:
    host = app_not_on_last_host
    run_on_host(host, [SVC, "stop"], lab.directory)
    incident = open_service_down(host, "app down where it does not run")
    pages_before = len(pager.pages)
    try:
        assert incident_restoration(incident.number) == "In Progress"
        assert run_on_host(host, [SVC, "status"], lab.directory).returncode != 0, (
            "no command may start app on a host it does not run on"
        )
    finally:
        run_on_host(host, [SVC, "start"], lab.directory)
    worklog = [w.text for w in open_records().worklog.entries(incident.id)]
    assert not any(t.startswith("runbook ") for t in worklog)
    [escalation] = [t for t in worklog if t.startswith("escalated to ops")]
    assert f"{host} does not run app" in escalation, escalation
    assert open_records().incidents.get(incident.id).assigned_to == "alice"
    assert incident.number in pager.wait_for(pages_before + 1, 20)[-1]["body"]["subject"]
