"""Keep every fact gathering's snapshots in the store, as history, pruned by age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from opsflow.itsm.store.facts import FactsSnapshot
from opsflow.itsm.store.records import open_records


class HistoryWrite(BaseModel):
    """Snapshots added by this run and old ones pruned."""

    recorded: int
    pruned: int


@task(cache_policy=NONE, timeout_seconds=120)
def record_facts_history(snapshots: list[FactsSnapshot], keep_days: float) -> HistoryWrite:
    """Append this run's snapshots and drop those older than `keep_days` (not retried)."""
    facts = open_records().facts
    recorded = facts.record(snapshots)
    pruned = facts.prune(datetime.now(UTC) - timedelta(days=keep_days))
    return HistoryWrite(recorded=recorded, pruned=pruned)
