"""What one uvicorn worker can do for single-alert webhooks: async endpoint + group commit.

Not opsflow: a sketch of the intake design the single-alert target (3,000/s) needs, measured
by `bench.intake --targets groupcommit` beside the real desk. Same validation (pydantic),
same bearer check, same durability (the 202 leaves only after the commit) as the baseline;
but the endpoint is `async` (no thread-pool hop per request) and one writer thread commits
the alerts of every request that arrived meanwhile in one transaction (group commit), so a
commit (and SQLite's writer lock) is paid per batch of requests, not per request.

    .venv/bin/python -m bench.groupcommit_intake --port 8799 --db /tmp/gc.db --token T
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import threading
from typing import Annotated

import uvicorn
from fastapi import FastAPI, Header, HTTPException

from bench.baseline_intake import SCHEMA, Webhook, event_rows

INSERT = (
    "INSERT OR IGNORE INTO events (dedup_key, fingerprint, status, labels, annotations, "
    "starts_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class GroupCommitter:
    """One thread owning the only writing connection; each commit serves many requests."""

    def __init__(self, db: str, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(SCHEMA)
        threading.Thread(target=self._run, name="group-commit", daemon=True).start()

    def submit(self, rows: list[tuple]) -> asyncio.Future:
        future = self._loop.create_future()
        self._queue.put((rows, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                counts = []
                for rows, _ in batch:
                    before = self._conn.total_changes
                    self._conn.executemany(INSERT, rows)
                    counts.append(self._conn.total_changes - before)
                self._conn.execute("COMMIT")
            except Exception as exc:
                self._conn.execute("ROLLBACK")
                for _, future in batch:
                    self._loop.call_soon_threadsafe(_fail, future, exc)
                continue
            for (_, future), count in zip(batch, counts, strict=True):
                self._loop.call_soon_threadsafe(_succeed, future, count)


def _succeed(future: asyncio.Future, value: int) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def create_app(db: str, token: str) -> FastAPI:
    app = FastAPI()
    expected = f"Bearer {token}"
    state: dict[str, GroupCommitter] = {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/events/alertmanager", status_code=202)
    async def receive(body: Webhook, authorization: Annotated[str, Header()] = "") -> dict:
        if authorization != expected:
            raise HTTPException(401, "bearer token required")
        if "writer" not in state:
            state["writer"] = GroupCommitter(db, asyncio.get_running_loop())
        rows = event_rows(body)
        stored = await state["writer"].submit(rows)
        return {"stored": stored, "duplicates": len(rows) - stored}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    with sqlite3.connect(args.db) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute(SCHEMA)
    uvicorn.run(
        create_app(args.db, args.token), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
