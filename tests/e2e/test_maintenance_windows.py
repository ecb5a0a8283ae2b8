"""A job's own maintenance window suppresses the incident its stop causes, and only that one."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsflow.flows.routine_ops.backup_services import backup_services
from opsflow.flows.routine_ops.health_check import health_check, health_event
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.tasks.desk_intake import send_events
from opsflow.tasks.service_control import stop_service
from opsflow.tasks.services import HealthResult, check_service_health
from tests.support.waiting import wait_for

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
HOST = "lab04"


def decided(fingerprint: str, occurred_at: datetime):
    """The triaged event of `fingerprint` that occurred at `occurred_at`, once triaged."""
    for event in open_records().events.with_fingerprint(fingerprint):
        if event.occurred_at == occurred_at and event.triaged_at is not None:
            return event
    return None


@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted:UserWarning")
def test_a_job_s_window_suppresses_its_own_stop_but_not_the_same_stop_later(
    lab, estate, desk_url: str, ssh_credentials, tmp_path: Path
) -> None:
    host, service = estate.host(HOST), estate.service("app")
    seen: list[tuple[HealthResult, datetime]] = []
    done = threading.Event()

    def monitor() -> None:
        """A monitor probing as fast as it can, reporting the first failure it sees."""
        while not done.is_set() and not seen:
            result = check_service_health.fn(host, service)
            if not result.healthy:
                seen.append((result, datetime.now(UTC)))
                send_events([health_event(*seen[0])])

    watcher = threading.Thread(target=monitor)
    watcher.start()
    try:
        [backup] = backup_services(
            {"app": ["/etc/app"]},
            hosts=[HOST],
            quiesce=True,
            window_grace_s=0,
            restore_tests=0,
            backup_dir=str(tmp_path),
        )
    finally:
        done.set()
        watcher.join(30)
    assert backup.quiesced and backup.downtime_s > 0
    assert seen, "the monitor never saw the service stopped"
    result, observed = seen[0]
    fingerprint = health_event(result, observed).fingerprint
    inside = wait_for(lambda: decided(fingerprint, observed), 20, "triage of the in-window event")
    assert inside.incident_id is None
    assert "[backup-services #" in (inside.rule or ""), inside.rule
    assert check_service_health.fn(host, service).healthy, "the job did not start the service again"

    # The same stop, outside any window: the health check's event opens an incident.
    try:
        assert stop_service(host, service).changed
        [failed] = health_check(hosts=[HOST])
        assert not failed.healthy
        events = wait_for(
            lambda: [
                e
                for e in open_records().events.with_fingerprint(fingerprint)
                if e.occurred_at > observed and e.triaged_at is not None
            ],
            20,
            "triage of the event outside the window",
        )
        assert events[0].incident_id is not None, events[0].rule
        incident = open_records().incidents.get(events[0].incident_id)
        assert (incident.host, incident.symptom) == (HOST, "service-down")
        # The desk restores it through the restart-service runbook.
        wait_for(
            lambda: check_service_health.fn(host, service).healthy,
            60,
            "the desk to restore the app",
        )
    finally:
        run_on_host(HOST, [SVC, "start"])
