"""Group commit: concurrent requests share transactions, and each gets its own counts."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import event

from opsflow.desk.group_commit import GroupCommit
from opsflow.itsm.store.records import Records
from tests.support.factories import alert


def test_concurrent_requests_share_commits_and_are_each_answered(store: Records) -> None:
    commits = []
    lock = threading.Lock()

    @event.listens_for(store.db.engine, "commit")
    def count(conn) -> None:
        with lock:
            commits.append(1)

    intake = GroupCommit(store)

    async def deliver_all() -> list[tuple[int, int]]:
        # 200 single-alert requests, every alert delivered twice (Alertmanager re-sends).
        return await asyncio.gather(*(intake.store([alert(f"fp{i % 100}")]) for i in range(200)))

    answers = asyncio.run(deliver_all())
    assert all(stored + duplicates == 1 for stored, duplicates in answers)
    assert sum(stored for stored, _ in answers) == 100
    assert len(store.events.pending(1000)) == 100
    assert len(commits) < 100, f"{len(commits)} commits for 200 requests: nothing was grouped"


def test_a_failed_commit_reaches_every_request_of_its_group(store: Records) -> None:
    intake = GroupCommit(store)
    with store.db.write() as conn:
        conn.exec_driver_sql(
            "DROP TABLE events" + (" CASCADE" if store.db.dialect == "postgresql" else "")
        )

    async def deliver() -> list[object]:
        return await asyncio.gather(
            *(intake.store([alert(f"fp{i}")]) for i in range(5)), return_exceptions=True
        )

    answers = asyncio.run(deliver())
    assert all(isinstance(a, Exception) and "events" in str(a) for a in answers), answers
