"""One holder at a time across every process on a records database, released when it dies."""

from __future__ import annotations

import fcntl
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from opsflow.itsm.store.db import Database


@contextmanager
def exclusive(db: Database, name: str) -> Iterator[None]:
    """Hold the lock `name` on the records database until the block ends; waits for it.

    PostgreSQL: a session advisory lock on a connection of its own; SQLite: an flock on a
    file beside the database. Either is released by the server or the kernel when the
    holding process dies, so a killed holder never blocks the next one (a lease would until
    it lapsed).
    """
    if db.dialect == "postgresql":
        key = zlib.crc32(f"opsflow:{name}".encode())
        with db.own_connection() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        return
    database = make_url(db.url).database
    if not database or database == ":memory:":
        yield  # one process, one connection: nothing else can hold it
        return
    path = Path(database).with_name(f"{Path(database).name}.{name}.lock")
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
