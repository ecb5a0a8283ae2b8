"""A routine job's findings the desk refuses fail the job loudly; the rest are stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prefect import flow

from opsflow.errors import PermanentError
from opsflow.itsm.store.records import open_records
from opsflow.tasks.desk_intake import DeskEvent, send_events


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
