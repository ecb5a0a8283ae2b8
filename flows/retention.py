"""Retention: delete what the records no longer need, so the store stops growing forever.

Scheduled daily (`prune-records` in prefect.yaml). Triaged events, the audit rows of
events and of finished incidents, and the failed runs paged about, older than the estate's
`retention_days`, are deleted;
events not yet triaged and everything about incidents still open are kept whatever their
age. Prefect's own flow runs are pruned by the Prefect server's database vacuum service,
which `opsflow up` turns on for flow runs with the same default retention.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from opsflow.itsm.store.records import open_records
from opsflow.itsm.store.retention import PruneResult, prune
from opsflow.tasks.inventory import read_estate


@task(cache_policy=NONE, timeout_seconds=3600)
def prune_records_before(before: datetime) -> PruneResult:
    """Delete triaged events, closed records' audit rows and paged failures older than
    `before` (idempotent)."""
    return prune(open_records().db, before)


@flow(name="prune-records")
def prune_records(retention_days: int | None = None) -> dict[str, int]:
    """Prune events and audit rows older than the retention period.

    Args:
        retention_days: how many days to keep; default the estate's `retention_days`.

    Returns how many events, audit rows and paged failures were deleted.
    """
    logger = get_run_logger()
    days = retention_days or read_estate().settings.retention_days
    before = datetime.now(UTC) - timedelta(days=days)
    result = prune_records_before(before)
    logger.info(
        "pruned %d events, %d audit rows and %d paged failures older than %s (%d days)",
        result.events,
        result.audit_rows,
        result.paged_failures,
        before.isoformat(timespec="seconds"),
        days,
    )
    return asdict(result)


if __name__ == "__main__":
    prune_records()
