"""Every incident opened with a runbook ends Resolved or escalated, whatever dies or fails."""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import requests
from prefect.client.orchestration import get_client

from opsflow.desk.runners.restorations import RestorationRunner
from opsflow.flows.incident_restoration import incident_restoration
from opsflow.itsm.records import Incident, IncidentUpdate
from opsflow.itsm.store.leases import RESTORATION_PREFIX, restoration_lease
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.lab.people import token_file
from opsflow.settings import get_settings
from opsflow.tasks.concurrency import host_slot
from opsflow.tasks.inventory import read_estate
from tests.support.factories import open_service_down
from tests.support.serving import two_workers_instead_of
from tests.support.waiting import wait_for

PROJECT = Path(__file__).resolve().parents[2]
FIRING = json.loads((PROJECT / "tests" / "fixtures" / "alertmanager" / "firing.json").read_text())


def keeper() -> RestorationRunner:
    """A desk's keeper of restorations with 1 s leases, restoring in this process."""
    return RestorationRunner(
        open_records(),
        lambda record, holder: incident_restoration(record.number, lease_holder=holder),
        lease_s=1.0,
    )


def worklog(incident: Incident) -> list[str]:
    return [w.text for w in open_records().worklog.entries(incident.id)]


def runbook_starts(incident: Incident) -> int:
    return sum(t.startswith("runbook restart-service started") for t in worklog(incident))


def state(incident: Incident) -> str:
    return open_records().incidents.get(incident.id).state


def lease_holder(incident: Incident) -> str | None:
    return open_records().leases.holder(restoration_lease(incident.id), datetime.now(UTC))


def app_runs(lab, host: str) -> bool:
    return run_on_host(host, [SVC, "status"], lab.directory).returncode == 0


def run_state(flow_run_id: str) -> str:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run.state.type.value if run.state else "NONE"


def test_a_host_slot_timeout_escalates_and_pages(lab, lab_desk, pager) -> None:
    host = lab.hosts[3].name
    incident = open_service_down(host, "slot timeout test")
    pages_before = len(pager.pages)
    with host_slot(host), pytest.raises(TimeoutError):
        incident_restoration(incident.number, slot_wait_s=1.0)

    after = open_records().incidents.get(incident.id)
    assert (after.state, after.assigned_to) == ("In Progress", "alice")
    escalation = next(t for t in worklog(incident) if t.startswith("escalated to ops"))
    assert "TimeoutError" in escalation, escalation
    assert runbook_starts(incident) == 0
    assert incident.number in pager.wait_for(pages_before + 1, 20)[-1]["body"]["subject"]
    assert lease_holder(incident) is None, "the lease is given back once escalated"


def test_a_restoration_that_lost_its_lease_while_waiting_steps_aside(lab, lab_desk, pager) -> None:
    host = lab.hosts[3].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    incident = open_service_down(host, "lease lost while waiting for the slot")
    name = restoration_lease(incident.id)
    leases = open_records().leases
    pages_before = len(pager.pages)
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(incident_restoration(incident.number)))
    try:
        with host_slot(host):
            worker.start()
            wait_for(lambda: lease_holder(incident), 30, "the restoration to claim the incident")
            # It stalls longer than its lease; a desk takes the restoration over.
            lapsed = datetime.now(UTC) + timedelta(seconds=get_settings().lease_seconds + 1)
            assert leases.take(name, "another-desk", lapsed, 600)
        worker.join(60)
        assert results == ["In Progress"]
        assert runbook_starts(incident) == 0
        assert not app_runs(lab, host), "the runbook did not run"
        assert not any(t.startswith("escalated") for t in worklog(incident))
        assert (
            "restoration lease lost to another-desk: runbook not run after waiting for "
            f"{host}'s slot, left to its holder"
        ) in worklog(incident)
        assert lease_holder(incident) == "another-desk", "left to the new holder"
        assert len(pager.pages) == pages_before
    finally:
        leases.release(name, "another-desk")
        run_on_host(host, [SVC, "start"], lab.directory)


def test_an_escalated_incident_is_not_restored_again(lab, lab_desk, pager) -> None:
    host = lab.hosts[3].name
    incident = open_service_down(host, "escalated, then its lease lapsed")
    pages_before = len(pager.pages)
    with host_slot(host), pytest.raises(TimeoutError):
        incident_restoration(incident.number, slot_wait_s=1.0)
    pages = len(pager.wait_for(pages_before + 1, 20))
    assert pages == pages_before + 1

    # The escalating run crashed before it gave its lease back: the lease lapses.
    leases = open_records().leases
    name = restoration_lease(incident.id)
    assert leases.take(name, "crashed-run", datetime.now(UTC) - timedelta(minutes=1), 1)
    runner = keeper()
    runner.keep()
    try:
        everything = datetime.now(UTC) + timedelta(days=1)
        wait_for(
            lambda: name not in {n for n, _ in leases.lapsed(RESTORATION_PREFIX, everything)},
            30,
            "a desk to take the lapsed lease and give it back",
        )
    finally:
        runner.stop()
    assert incident_restoration(incident.number) == "In Progress", "as for a correlated alert"

    after = open_records().incidents.get(incident.id)
    assert (after.state, after.assigned_to) == ("In Progress", "alice")
    assert runbook_starts(incident) == 0
    assert not any("taken over" in t for t in worklog(incident))
    assert sum(t.startswith("escalated to ops") for t in worklog(incident)) == 1
    assert len(pager.pages) == pages, "the on-call is paged once"


def test_the_crash_hook_pages_from_the_last_good_estate(
    lab, lab_desk, pager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    estate_dir = tmp_path / "estate"
    shutil.copytree(lab.estate_dir, estate_dir)
    monkeypatch.setenv("OPSFLOW_INVENTORY", str(estate_dir))
    read_estate.fn()
    with (estate_dir / "people.yaml").open("a") as people:
        people.write("  - name: [unclosed\n")

    host = lab.hosts[3].name
    incident = open_service_down(host, "slot timeout with a broken estate")
    pages_before = len(pager.pages)
    with host_slot(host), pytest.raises(TimeoutError):
        incident_restoration(incident.number, slot_wait_s=1.0)

    assert open_records().incidents.get(incident.id).assigned_to == "alice"
    assert incident.number in pager.wait_for(pages_before + 1, 20)[-1]["body"]["subject"]
    assert not any("estate cannot be read" in t for t in worklog(incident))


def test_two_restorations_of_one_incident_run_the_runbook_once(lab, lab_desk) -> None:
    host = lab.hosts[3].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    incident = open_service_down(host, "twice test")
    start = threading.Barrier(2)
    results: list[str] = []

    def restore() -> None:
        start.wait()
        results.append(incident_restoration(incident.number))

    workers = [threading.Thread(target=restore) for _ in range(2)]
    with host_slot(host):
        for worker in workers:
            worker.start()
        wait_for(lambda: results, 60, "the second restoration to step aside")
        assert results == ["In Progress"], "it did not wait for the slot the first one holds"
        assert runbook_starts(incident) == 0
    for worker in workers:
        worker.join(60)
    assert sorted(results) == ["In Progress", "Resolved"]
    assert runbook_starts(incident) == 1
    assert app_runs(lab, host)


def test_an_incident_resolved_while_waiting_for_the_slot_is_left_alone(lab, lab_desk) -> None:
    host = lab.hosts[3].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    incident = open_service_down(host, "resolved meanwhile")
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(incident_restoration(incident.number)))
    with host_slot(host):
        worker.start()
        wait_for(lambda: lease_holder(incident), 30, "the restoration to claim the incident")
        open_records().incidents.update(
            incident.id,
            IncidentUpdate(state="Resolved", resolution_code="manual", resolution_notes="by hand"),
            actor="alice",
            now=datetime.now(UTC),
        )
    worker.join(60)
    try:
        assert results == ["Resolved"]
        assert runbook_starts(incident) == 0
        assert f"Resolved while waiting for {host}'s slot: runbook not run" in worklog(incident)
        assert not app_runs(lab, host), "the runbook did not start it"
    finally:
        run_on_host(host, [SVC, "start"], lab.directory)


def test_an_incident_whose_restoration_never_started_is_restored(lab, lab_desk) -> None:
    host = lab.hosts[3].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    incident = open_service_down(host, "queued when its desk stopped")

    runner = keeper()
    runner.keep()
    try:
        wait_for(lambda: state(incident) == "Resolved", 60, f"{incident.number} to be restored")
    finally:
        runner.stop()
    assert any(t.startswith("no restoration started") for t in worklog(incident))
    assert runbook_starts(incident) == 1
    assert app_runs(lab, host)


@pytest.fixture
def two_workers(lab, lab_desk, tmp_path: Path) -> Iterator[list[subprocess.Popen]]:
    """Two worker processes with 2 s leases, and no other worker while they run."""
    with two_workers_instead_of(lab_desk, lab.estate_dir, tmp_path) as two:
        yield two


def service_down_alert(host: str) -> dict:
    """An Alertmanager webhook saying app is down on `host`, never sent before."""
    body = copy.deepcopy(FIRING)
    alert = body["alerts"][0]
    alert["labels"].update(host=host, service="app", alertname="ServiceDown")
    alert["fingerprint"] = uuid4().hex[:16]
    alert["startsAt"] = datetime.now(UTC).isoformat()
    return body


def test_worker_killed_mid_restoration_leaves_no_incident_behind(
    lab, lab_desk, two_workers: list[subprocess.Popen]
) -> None:
    host = lab.hosts[2].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    token = token_file(lab.directory, "alertmanager").read_text()
    by_pid = {process.pid: process for process in two_workers}

    def claimed_by_a_worker() -> tuple[Incident, subprocess.Popen] | None:
        for found in open_records().incidents.list(host=host, state=["In Progress"], limit=5):
            holder = lease_holder(found) or ""
            pid = int(holder.split(":")[1]) if holder.count(":") == 2 else None
            if found.runbook and pid in by_pid:
                return found, by_pid[pid]
        return None

    with host_slot(host):
        answer = requests.post(
            f"{lab_desk.url}/api/v1/events/alertmanager",
            json=service_down_alert(host),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        incident, carrier = wait_for(claimed_by_a_worker, 60, "a worker to claim the incident")
        dead_run = incident.flow_run_ids[-1]  # after the triage run that opened it

        carrier.send_signal(signal.SIGKILL)
        carrier.wait(10)
        wait_for(
            lambda: any(t.startswith("restoration taken over from") for t in worklog(incident)),
            30,
            "the other worker to take the restoration over",
        )
        assert runbook_starts(incident) == 0, "the host's slot is still held"

    wait_for(lambda: state(incident) == "Resolved", 60, f"{incident.number} to be resolved")
    assert runbook_starts(incident) == 1
    assert app_runs(lab, host)
    assert run_state(dead_run) == "CRASHED"
    assert lease_holder(incident) is None
