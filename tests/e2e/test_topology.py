"""Two desks, two workers, one PostgreSQL: kill a desk and a worker mid-storm, lose nothing."""

from __future__ import annotations

import copy
import itertools
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
import requests
from sqlalchemy import select

from opsflow.itsm.records import Incident
from opsflow.itsm.store.events import events
from opsflow.itsm.store.leases import restoration_lease
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.lab.people import token_file
from opsflow.runtime.worker import Worker
from opsflow.tasks.concurrency import host_slot
from tests.support.serving import DeskProcess, desk_process, worker_process
from tests.support.waiting import wait_for

PROJECT = Path(__file__).resolve().parents[2]
FIRING = json.loads((PROJECT / "tests" / "fixtures" / "alertmanager" / "firing.json").read_text())
STORM_WEBHOOKS = 60
ALERTS_PER_WEBHOOK = 10


def alert(host: str, fingerprint: str, severity: str, starts_at: str) -> dict:
    template = copy.deepcopy(FIRING["alerts"][0])
    template["labels"] = {
        "alertname": "ServiceDown" if severity == "critical" else "Chatter",
        "host": host,
        "service": "app",
        "severity": severity,
    }
    template.update(fingerprint=fingerprint, startsAt=starts_at)
    return template


@pytest.fixture
def topology(lab, lab_desk, tmp_path: Path) -> Iterator[tuple[list[DeskProcess], list]]:
    """Two desk processes and two worker processes, 2 s leases, no other worker running."""
    lab_desk.worker.stop()
    try:
        with (
            desk_process(lab.estate_dir, tmp_path / "desk-1.log") as desk_1,
            desk_process(lab.estate_dir, tmp_path / "desk-2.log") as desk_2,
            worker_process(lab.estate_dir, tmp_path / "worker-1.log") as worker_1,
            worker_process(lab.estate_dir, tmp_path / "worker-2.log") as worker_2,
        ):
            yield [desk_1, desk_2], [worker_1, worker_2]
    finally:
        lab_desk.worker = Worker()
        lab_desk.worker.start()


def test_a_storm_survives_a_killed_desk_and_a_killed_worker(lab, topology, tmp_path) -> None:
    desks, workers = topology
    hosts = [host.name for host in lab.hosts[:3]]
    held = hosts[0]
    token = token_file(lab.directory, "alertmanager").read_text()
    started = datetime.now(UTC)
    now = started.isoformat()
    down = {host: alert(host, uuid4().hex[:16], "critical", now) for host in hosts}
    acknowledged: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    for host in hosts:
        run_on_host(host, [SVC, "stop"], lab.directory)

    def post(webhook: int, chatter: list[dict]) -> None:
        body = copy.deepcopy(FIRING)
        body["alerts"] = [down[hosts[webhook % len(hosts)]], *chatter]
        # Like Alertmanager: a desk that does not answer is retried at the other one.
        for target in itertools.islice(itertools.cycle(desks), webhook % 2, webhook % 2 + 4):
            try:
                answer = requests.post(
                    f"{target.url}/api/v1/events/alertmanager",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                continue  # refused, or the desk died while answering: not acknowledged
            if answer.status_code == 202:
                with lock:
                    acknowledged.extend(a["fingerprint"] for a in body["alerts"])
                return
        with lock:
            refused.append(webhook)

    def carrier_of(incident: Incident) -> subprocess.Popen | None:
        holder = open_records().leases.holder(restoration_lease(incident.id), datetime.now(UTC))
        for process in workers:
            if holder and f":{process.pid}:" in holder:
                return process
        return None

    def opened_now(host: str) -> list[Incident]:
        found = open_records().incidents.list(host=host, limit=10)
        return [i for i in found if i.opened_at >= started and i.runbook]

    def opened(host: str) -> Incident | None:
        return next(iter(opened_now(host)), None)

    with host_slot(held):
        storm = [
            threading.Thread(
                target=post,
                args=(
                    n,
                    [
                        alert(hosts[n % len(hosts)], uuid4().hex[:16], "info", now)
                        for _ in range(ALERTS_PER_WEBHOOK - 1)
                    ],
                ),
            )
            for n in range(STORM_WEBHOOKS)
        ]
        for thread in storm[: STORM_WEBHOOKS // 2]:
            thread.start()
        desks[0].process.send_signal(signal.SIGKILL)  # mid-storm
        for thread in storm[STORM_WEBHOOKS // 2 :]:
            thread.start()
        for thread in storm:
            thread.join(60)
        incident = wait_for(lambda: opened(held), 60, f"an incident for {held}")
        carrier = wait_for(lambda: carrier_of(incident), 60, "a worker to carry it")
        carrier.send_signal(signal.SIGKILL)  # while it waits for the host's slot
        carrier.wait(10)

    assert not refused, f"webhooks no desk acknowledged: {refused}"
    with open_records().db.read() as conn:
        stored = set(conn.execute(select(events.c.fingerprint)).scalars())
    assert set(acknowledged) <= stored, "an acknowledged alert was lost"
    for host in hosts:
        incident = wait_for(lambda h=host: opened(h), 60, f"an incident for {host}")
        wait_for(
            lambda i=incident: open_records().incidents.get(i.id).state == "Resolved",
            90,
            f"{incident.number} on {host} to be resolved",
        )
        worklog = [w.text for w in open_records().worklog.entries(incident.id)]
        starts = sum(t.startswith("runbook restart-service started") for t in worklog)
        assert starts == 1, f"{incident.number}: the runbook started {starts} times"
        assert len(opened_now(host)) == 1, f"more than one incident on {host}"
        assert run_on_host(host, [SVC, "status"], lab.directory).returncode == 0

    # The workers ran the runbooks with the SSH key of the `opsflow-lab` block: their logs
    # say what they did, and hold neither that key nor the senders' token.
    key = [line for line in lab.client_key.read_text().splitlines() if "-----" not in line]
    for log in tmp_path.glob("*.log"):
        text = log.read_text(errors="replace")
        assert token not in text and not any(line in text for line in key if line), log
    assert "INFO opsflow.worker[" in (tmp_path / "worker-1.log").read_text()
    assert " opsflow.desk.access[" in (tmp_path / "desk-2.log").read_text()
