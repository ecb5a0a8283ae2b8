"""The records database: its URL, engine, connections and the column types every table uses.

SQLAlchemy Core, not the ORM, because intake writes thousands of events a second. One engine
per `Database`, a connection per call, so one `Database` serves many threads.

On SQLite every writing transaction starts with BEGIN IMMEDIATE: writers queue on the
database lock (busy timeout 10 s) instead of failing when a read turns into a write, and
readers carry on alongside them thanks to WAL. On PostgreSQL the same code relies on row
locks, the partial unique indexes and the version columns.

Durability: SQLite runs in WAL with synchronous=NORMAL, so a committed write survives the
process crashing, but a power cut or kernel crash may undo the last few commits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

from opsflow.itsm.migrations import upgrade_engine
from opsflow.itsm.store.errors import StoreConfigError
from opsflow.settings import get_settings

CHUNK = 500
"""Ids per IN (...) list, well under SQLite's bound-variable limit."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no offset, so we add it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes and store UTC (without offset on SQLite, which drops it)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; the store takes timezone-aware ones")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored instant as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
"""A JSON column: JSONB on PostgreSQL."""
Id = BigInteger().with_variant(Integer(), "sqlite")
"""A record id: 64 bits, and INTEGER on SQLite, where only that is the rowid alias."""

metadata = MetaData()
"""Every table of the records, whichever module declares it."""


def default_database_url() -> str:
    """The configured records database, else SQLite under the opsflow home."""
    settings = get_settings()
    return settings.database_url or f"sqlite:///{settings.home}/opsflow.db"


def take_turns(conn: Connection, key: str) -> None:
    """Make the writing transactions that call this with `key` run one after another from
    here to their end: a transaction advisory lock on PostgreSQL; SQLite's writers take
    turns already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))


def require_aware(value: datetime, name: str) -> None:
    """Refuse a naive datetime, naming the argument."""
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


class Database:
    """The records database behind one URL; safe to share between threads.

    Opening it brings the database to the newest schema (`itsm.migrations`), every record
    table included, whichever record modules this process uses; `schema` says what changed.

    Args:
        url: SQLAlchemy URL (`sqlite:///path`, `postgresql+psycopg://…`); by default
            `OPSFLOW_DATABASE_URL`, else `opsflow.db` in the opsflow home.
    """

    def __init__(self, url: str | None = None):
        self.url = url or default_database_url()
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreConfigError(
                f"records store supports sqlite and postgresql, not {self.dialect!r}"
            )
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # More pooled connections than the desk has worker threads (anyio's 40): with 8,
            # every request beyond the 8th opened and closed a connection (and its PRAGMAs).
            self._engine = create_engine(self.url, pool_size=48, max_overflow=16)
            _configure_sqlite(self._engine)
        else:
            self._engine = create_engine(self.url, pool_pre_ping=True)
        self._writer = self._engine.execution_options(opsflow_write=True)
        self.autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        """The engine in autocommit: one statement, one transaction, one round trip."""
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else nullcontext()
        try:
            self.schema = upgrade_engine(self._writer)
        except BaseException:
            self._engine.dispose()  # a store that cannot open keeps no connections
            raise

    def own_connection(self) -> Connection:
        """A connection of the caller's own, in autocommit, for locks held across statements."""
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        """Close the pooled connections (the database can still be used afterwards)."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine."""
        return self._engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write: committed on success, rolled back on error.

        On SQLite the writers of this process queue on a lock first: SQLite's own busy
        handler makes a waiting writer sleep in steps of up to 100 ms, so writers that
        collide on the database lock wait far longer than the lock is held (p99 of the
        intake 0.9-2 s instead of ~0.2 s at 8 connections).
        """
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading only."""
        with self._engine.connect() as conn:
            yield conn


def _configure_sqlite(engine: Engine) -> None:
    """WAL, NORMAL sync, 10 s busy timeout, foreign keys; we issue BEGIN ourselves."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module so writers can ask for BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("opsflow_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
