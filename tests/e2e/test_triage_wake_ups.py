"""Desk to worker on PostgreSQL: the workers hear of stored events from the
database itself, so the desk sends Prefect no triage wake-ups (each cost a worker a task run)."""

from __future__ import annotations

from datetime import UTC, datetime

import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

from opsflow.itsm.store.records import open_records
from opsflow.lab.people import token_file
from tests.support.factories import firing
from tests.support.waiting import wait_for


def test_on_postgresql_events_are_triaged_without_prefect_wake_ups(lab_desk, lab) -> None:
    store = open_records()
    assert store.db.dialect == "postgresql"
    since = datetime.now(UTC)
    body = firing(alertname="DeskWiring", severity="warning", host="web-unknown")
    body["alerts"][0]["fingerprint"] = f"{int(since.timestamp() * 1e6):x}"
    token = token_file(lab.directory, "alertmanager").read_text().strip()
    answer = requests.post(
        f"{lab_desk.url}/api/v1/events/alertmanager",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 202 and answer.json()["stored"] == 1

    fingerprint = body["alerts"][0]["fingerprint"]
    [event] = wait_for(
        lambda: [e for e in store.events.with_fingerprint(fingerprint) if e.triaged_at],
        30,
        "the worker to triage the event",
    )
    assert event.event_class == "warning"
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["triage-events"]))
        )
    assert [r.id for r in runs if r.created and r.created >= since] == []
