"""One flow at a time acts on a host: restoration waits while another holds the host's slot."""

from __future__ import annotations

import threading
import time

from opsflow.flows.incident_restoration import incident_restoration
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.tasks.concurrency import host_slot
from tests.support.factories import open_service_down
from tests.support.waiting import wait_for

HELD_S = 4.0


def test_restoration_waits_for_the_hosts_slot(lab, lab_desk) -> None:
    host = lab.hosts[0].name
    run_on_host(host, [SVC, "stop"], lab.directory)
    incident = open_service_down(host, "slot test")
    result: list[str] = []
    with host_slot(host):
        held_since = time.monotonic()
        worker = threading.Thread(
            target=lambda: result.append(incident_restoration(incident.number))
        )
        worker.start()
        wait_for(
            lambda: open_records().incidents.get(incident.id).state == "In Progress",
            30,
            "the restoration to start",
        )
        time.sleep(max(0.0, HELD_S - (time.monotonic() - held_since)))
        worklog = [w.text for w in open_records().worklog.entries(incident.id)]
        assert not any(t.startswith("runbook ") for t in worklog), "acted while the slot was held"
        assert run_on_host(host, [SVC, "status"], lab.directory).returncode != 0
    worker.join(60)
    assert result == ["Resolved"]
    assert run_on_host(host, [SVC, "status"], lab.directory).returncode == 0
