"""The desk's `/metrics`: Prometheus's format, every series operators alert on, figures that
follow the records, and one view of every desk process whichever answers the scrape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from opsflow.itsm.records import EventIn
from tests.support.factories import auth, firing
from tests.support.metrics import sample
from tests.support.serving import desk_process

SERIES = {
    "opsflow_records_readable": "gauge",
    "opsflow_triage_pending_events": "gauge",
    "opsflow_triage_oldest_pending_seconds": "gauge",
    "opsflow_events_failed": "gauge",
    "opsflow_incidents_open": "gauge",
    "opsflow_incidents_sla_breached": "gauge",
    "opsflow_restorations_running": "gauge",
    "opsflow_approvals_waiting": "gauge",
    "opsflow_approvals_oldest_waiting_seconds": "gauge",
    "opsflow_time_to_restore_seconds": "histogram",
    "opsflow_estate_load_failing": "gauge",
    "opsflow_estate_loaded_timestamp_seconds": "gauge",
    "opsflow_intake_seconds": "histogram",
    "opsflow_intake_commit_seconds": "histogram",
    "opsflow_intake_group_requests": "histogram",
    "opsflow_intake_group_events": "histogram",
    "opsflow_intake_waiting_events": "gauge",
    "opsflow_events_stored": "counter",
    "opsflow_events_repeated": "counter",
    "opsflow_events_rejected": "counter",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
}
"""What the desk's page must carry (the rules file and the README's table name these)."""


def families(page: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(page)}


def test_every_series_is_there_and_parses(desk_client) -> None:
    page = desk_client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    found = families(page.text)
    assert {name: found.get(name) for name in SERIES} == SERIES


def test_the_figures_follow_the_records_and_the_intake(desk_client, store) -> None:
    before = desk_client.get("/metrics").text
    old = datetime.now(UTC) - timedelta(minutes=10)
    event = EventIn(source="t", fingerprint="old", status="firing", occurred_at=old, labels={})
    store.events.store([event], old)
    requests_ = store.requests
    waiting = requests_.create("restart", {}, "rita", "one", "rita", old)
    requests_.move(waiting.id, "awaiting-approval", "desk", old)

    answer = desk_client.post("/api/v1/events/alertmanager", json=firing(), headers=auth("max"))
    assert answer.status_code == 202
    after = desk_client.get("/metrics").text

    assert sample(after, "opsflow_triage_pending_events") == 2
    assert sample(after, "opsflow_triage_oldest_pending_seconds") >= 600
    assert sample(after, "opsflow_approvals_waiting", kind="request") == 1
    assert sample(after, "opsflow_approvals_oldest_waiting_seconds", kind="request") >= 600
    assert sample(after, "opsflow_approvals_waiting", kind="access") == 0
    assert sample(after, "opsflow_records_readable") == 1
    for name, labels, grew_by in (
        ("opsflow_events_stored_total", {}, 1),
        ("opsflow_intake_seconds_count", {"source": "alertmanager"}, 1),
        ("opsflow_intake_group_requests_count", {}, 1),
        ("opsflow_intake_group_events_sum", {}, 1),
    ):
        assert sample(after, name, **labels) == sample(before, name, **labels) + grew_by, name


@pytest.mark.parametrize("records_url", ["sqlite"], indirect=True)
def test_a_scrape_answers_when_the_records_cannot_be_read(desk_client, store, records_url) -> None:
    database = Path(records_url.removeprefix("sqlite:///"))
    store.db.dispose()
    for path in database.parent.glob(database.name + "*"):
        path.unlink()
    database.mkdir()  # where the database was, something SQLite cannot open
    page = desk_client.get("/metrics")
    assert page.status_code == 200
    assert sample(page.text, "opsflow_records_readable") == 0
    assert "opsflow_triage_pending_events" not in families(page.text)
    assert "opsflow_intake_seconds" in families(page.text)


@pytest.mark.parametrize("records_url", ["postgresql"], indirect=True)
def test_every_desk_process_is_counted_whichever_answers(
    prefect_server, records_url: str, desk_estate: Path, tmp_path: Path, monkeypatch
) -> None:
    """The desk's two processes share its port: each scrape reaches one of them, and every
    one of them must show the events both stored and both processes' figures."""
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", records_url)
    with desk_process(desk_estate, tmp_path / "desk.log") as desk_client:
        webhooks = 40
        for n in range(webhooks):  # a new connection each: both processes take some
            body = firing(host=f"web{n}")
            body["alerts"][0]["fingerprint"] = f"{n:016x}"
            answer = requests.post(
                f"{desk_client.url}/api/v1/events/alertmanager",
                json=body,
                headers=auth("max"),
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
        pids = set()
        for _ in range(10):  # a new connection each time: either process may answer
            page = requests.get(f"{desk_client.url}/metrics", timeout=10).text
            assert sample(page, "opsflow_events_stored_total") == webhooks
            assert sample(page, "opsflow_intake_seconds_count", source="alertmanager") == webhooks
            cpu = [
                s
                for f in text_string_to_metric_families(page)
                if f.name == "process_cpu_seconds"
                for s in f.samples
            ]
            pids |= {s.labels["pid"] for s in cpu}
            assert len(cpu) == 2, cpu
        assert len(pids) == 2
