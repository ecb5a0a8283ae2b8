"""A routine job's findings the desk refuses fail the job loudly; the rest are stored; an
all-clear goes only where an incident waits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prefect import flow

from opsflow.errors import PermanentError
from opsflow.itsm.store.records import open_records
from opsflow.tasks.desk_intake import DeskEvent, OpenIncident, clearing_events, send_events

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_events_the_desk_refuses_fail_the_task_and_the_others_are_stored(
    desk_url: str,
) -> None:
    now = datetime.now(UTC)
    good = DeskEvent(source="test-job", fingerprint=f"good-{now.timestamp()}", occurred_at=now)
    bad = DeskEvent(
        source="test-job",
        fingerprint=f"bad-{now.timestamp()}",
        summary="disk full\x00",
        occurred_at=now,
    )

    @flow
    def job() -> None:
        send_events([good, bad])

    with pytest.raises(PermanentError, match="refused 1 of 2"):
        job()
    store = open_records()
    assert len(store.events.with_fingerprint(good.fingerprint)) == 1
    assert store.events.with_fingerprint(bad.fingerprint) == []


def test_all_clear_only_where_an_incident_waits_and_nothing_refires() -> None:
    def event(host: str, severity: str = "critical") -> DeskEvent:
        return DeskEvent(
            source="opsflow-certificates",
            fingerprint=f"certificate/{host}/x",
            host=host,
            service="app",
            severity=severity,
            labels={"symptom": "certificate-expiring"},
            occurred_at=T0,
        )

    waiting = [
        OpenIncident(
            number="INC1", host=h, service="app", symptom="certificate-expiring", state="New"
        )
        for h in ("lab01", "lab02")
    ]
    resolved = clearing_events(
        waiting, [event("lab01"), event("lab02"), event("lab03")], [event("lab02")]
    )
    assert [(e.host, e.status) for e in resolved] == [("lab01", "resolved")]
