"""A worker process serves its own `/metrics`, on the port its start line names, and counts
the triage passes it runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from opsflow.itsm.records import EventIn
from opsflow.itsm.store.records import Records
from tests.support.metrics import sample
from tests.support.serving import worker_process
from tests.support.waiting import wait_for

SERIES = (
    "opsflow_triage_runs_total",
    "opsflow_triage_run_seconds_count",
    "opsflow_triage_lag_seconds_count",
    "opsflow_worker_restorations_running",
    "opsflow_ssh_connections_open",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
)


@pytest.mark.parametrize("records_url", ["postgresql"], indirect=True)
def test_a_worker_serves_what_it_counted(
    prefect_server, lab, records_url: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", records_url)
    log = tmp_path / "worker.log"
    with worker_process(lab.estate_dir, log):
        [url] = re.findall(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
        page = requests.get(url, timeout=10).text
        for name in SERIES:
            sample(page, name, **({"outcome": "triaged"} if "runs" in name else {}))
        assert sample(page, "opsflow_restorations_total", outcome="resolved") == 0

        now = datetime.now(UTC)
        events = [
            EventIn(source="t", fingerprint=f"f{n}", status="firing", occurred_at=now, labels={})
            for n in range(3)
        ]
        Records(records_url).events.store(events, now)

        def triaged() -> float:
            page = requests.get(url, timeout=10).text
            return sample(page, "opsflow_triage_runs_total", outcome="triaged")

        wait_for(triaged, 60, "a triage pass counted")
        page = requests.get(url, timeout=10).text
        decided = [
            s.value
            for family in text_string_to_metric_families(page)
            for s in family.samples
            if s.name == "opsflow_triage_events_total"
        ]
        assert sum(decided) == 3
        assert sample(page, "opsflow_triage_lag_seconds_count") >= 1
