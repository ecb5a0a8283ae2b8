"""From a real alert to a verified restoration, or to a human paged: the closed loop."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.tasks.services import check_service_health
from tests.support.prefect_api import prefect_events
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("monitoring")

RESTORE_TIMEOUT_S = 90


def incident_for(host: str, symptom: str):
    found = [
        i for i in open_records().incidents.list(host=host, service="app") if i.symptom == symptom
    ]
    return found[0] if found else None


def resolved_incident(host: str, symptom: str):
    incident = incident_for(host, symptom)
    return incident if incident and incident.state == "Resolved" else None


def restoration_tags(number: str) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"restore-{number}"]))
        )
    return {tag for run in runs for tag in run.tags}


def restoration_task_tags(number: str) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"restore-{number}"]))
        )
    assert runs, f"no task runs of restore-{number}"
    return {tag for run in runs for tag in run.tags}


def incident_events(number: str, change: str) -> list[dict]:
    return wait_for(
        lambda: [
            e
            for e in prefect_events(f"opsflow.incident.{change}")
            if e["payload"].get("number") == number
        ],
        30,
        f"the {change} event of {number} in Prefect",
    )


def resolved_alert_triaged(incident) -> bool:
    store = open_records()
    for fingerprint in {e.fingerprint for e in store.events.of_incident(incident.id)}:
        if any(
            e.status == "resolved" and e.triaged_at
            for e in store.events.with_fingerprint(fingerprint)
        ):
            return True
    return False


@pytest.mark.parametrize(
    ("host_index", "kind", "symptom", "runbook"),
    [
        (1, "service", "service-down", "restart-service"),
        (2, "disk", "disk-full", "free-disk-space"),
        (3, "hang", "service-hung", "recover-hung-service"),
    ],
    ids=["service-down", "disk-full", "hung"],
)
def test_alert_to_verified_restoration(lab, estate, host_index, kind, symptom, runbook) -> None:
    host = lab.hosts[host_index].name
    break_host(host, kind, lab.directory)
    incident = wait_for(
        lambda: resolved_incident(host, symptom), RESTORE_TIMEOUT_S, f"{symptom} on {host}"
    )
    assert incident.runbook == runbook
    assert incident.resolution_code == "auto-remediated"
    assert incident.time_to_restore_s is not None and incident.time_to_restore_s > 0
    assert (incident.impact, incident.priority) == (2, 2 if symptom != "disk-full" else 3)
    assert check_service_health.fn(estate.host(host), estate.service("app")).healthy
    worklog = [w.text for w in open_records().worklog.entries(incident.id)]
    assert any(t.startswith("diagnosis:") for t in worklog)
    assert any(t.startswith("verified:") for t in worklog)
    assert [e["payload"]["state"] for e in incident_events(incident.number, "resolved")] == [
        "Resolved"
    ]
    assert {"itil:incident", f"host:{host}"} <= restoration_tags(incident.number)
    assert not restoration_task_tags(incident.number), "task runs cost a round trip per tag"
    wait_for(lambda: resolved_alert_triaged(incident), 30, "the resolved alert, triaged")
    assert open_records().incidents.get(incident.id).state == "Resolved"
    if kind == "disk":
        df = run_on_host(host, ["df", "-P", "/var/log/app"], lab.directory).stdout
        assert int(df.splitlines()[-1].split()[4].rstrip("%")) < 80


def test_unrecoverable_service_escalates_to_a_human(lab, pager) -> None:
    host = lab.hosts[4].name
    binary = "/var/lib/app/current/app-server"
    run_on_host(host, ["mv", binary, f"{binary}.away"], lab.directory)
    pages_before = len(pager.pages)
    try:
        break_host(host, "service", lab.directory)
        incident = wait_for(
            lambda: (i := incident_for(host, "service-down")) and i.assigned_to and i,
            RESTORE_TIMEOUT_S,
            "escalation",
        )
        pages = pager.wait_for(pages_before + 1, 30)
    finally:
        run_on_host(host, ["mv", f"{binary}.away", binary], lab.directory)
        run_on_host(host, [SVC, "start"], lab.directory)
    assert incident.state == "In Progress"
    assert (incident.assignment_group, incident.assigned_to) == ("ops", "alice")
    assert incident.number in pages[-1]["body"]["subject"]
    worklog = [w.text for w in open_records().worklog.entries(incident.id)]
    assert any(t.startswith("stopped app on") for t in worklog), worklog
    assert any("escalated to ops" in t for t in worklog)
    assert incident_events(incident.number, "escalated")
