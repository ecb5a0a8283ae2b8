"""Keep every fact gathering's snapshots in the store, as history, pruned by age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from opsflow.itsm.facts_store import FactsSnapshot, prune_snapshots, record_snapshots
from opsflow.tasks.records import open_store


class HistoryWrite(BaseModel):
    """Snapshots added by this run and old ones pruned."""

    recorded: int
    pruned: int


@task(cache_policy=NONE, timeout_seconds=120)
def record_facts_history(snapshots: list[FactsSnapshot], keep_days: float) -> HistoryWrite:
    """Append this run's snapshots and drop those older than `keep_days` (not retried)."""
    store = open_store()
    recorded = record_snapshots(store, snapshots)
    pruned = prune_snapshots(store, datetime.now(UTC) - timedelta(days=keep_days))
    return HistoryWrite(recorded=recorded, pruned=pruned)
