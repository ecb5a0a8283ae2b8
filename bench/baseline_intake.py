"""The intake baseline: a minimal FastAPI + pydantic + SQLite (WAL) Alertmanager endpoint.

The same work the desk's intake must do, and nothing more: validate the webhook with
pydantic, check a bearer token, insert every alert with one `executemany` (deduplicated by a
unique key, `INSERT OR IGNORE`), commit, answer 202. One sqlite3 connection per worker
thread, WAL, synchronous=NORMAL, like the desk's store. Served the same way as the desk
(`uvicorn.run`, one worker, default loop and HTTP implementation).

    .venv/bin/python -m bench.baseline_intake --port 8799 --db /tmp/baseline.db --token T
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Annotated, Literal

import uvicorn
from fastapi import FastAPI, Header, HTTPException
from pydantic import AwareDatetime, BaseModel, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    received_at TEXT NOT NULL
)
"""


class Alert(BaseModel):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    fingerprint: str


class Webhook(BaseModel):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: Annotated[list[Alert], Field(min_length=1, max_length=10_000)]


def event_rows(body: Webhook) -> list[tuple[str, ...]]:
    """The `events` rows of a webhook's alerts, each keyed by fingerprint, status and start."""
    received = datetime.now(UTC).isoformat()
    return [
        (
            hashlib.sha256(
                f"{a.fingerprint}\x1f{a.status}\x1f{a.startsAt.isoformat()}".encode()
            ).hexdigest(),
            a.fingerprint,
            a.status,
            json.dumps(a.labels),
            json.dumps(a.annotations),
            a.startsAt.isoformat(),
            received,
        )
        for a in body.alerts
    ]


def create_app(db: str, token: str) -> FastAPI:
    app = FastAPI()
    local = threading.local()
    expected = f"Bearer {token}"
    with sqlite3.connect(db) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute(SCHEMA)

    def connection() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(db, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            local.conn = conn
        return conn

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/events/alertmanager", status_code=202)
    def receive(body: Webhook, authorization: Annotated[str, Header()] = "") -> dict[str, int]:
        if authorization != expected:
            raise HTTPException(401, "bearer token required")
        rows = event_rows(body)
        conn = connection()
        with conn:  # one transaction, committed on exit
            stored = conn.executemany(
                "INSERT OR IGNORE INTO events (dedup_key, fingerprint, status, labels, "
                "annotations, starts_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            ).rowcount
        return {"stored": stored, "duplicates": len(rows) - stored}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.db, args.token), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
