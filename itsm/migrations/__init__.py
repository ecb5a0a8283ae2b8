"""Schema changes of the records database, as Alembic migrations run when a store opens.

Opening the records' `Database` brings it to the newest revision (`upgrade_engine`), and so do
`opsflow db upgrade` and `opsflow up` (its desk opens the store). One process migrates at
a time: the migration runs in one transaction that holds an advisory lock on PostgreSQL and
the write lock (BEGIN IMMEDIATE) on SQLite, and the others find the work done.

A database opsflow made before migrations (any commit up to d71d4a3) has opsflow's tables
but no `alembic_version`: its tables are checked against the frozen schema of that time
(`premigration`), then the first two revisions make only the tables it lacks.

To change a table: change its `Table`, then write a revision in `versions/`, e.g. with
`new_revision("add incidents.cause", "sqlite:///scratch.db")`, which compares the code's
tables with a scratch database at head. On SQLite most ALTERs are batch operations, which
copy the table: give `op.batch_alter_table` `table_kwargs={"sqlite_autoincrement": True}`
for a table declared with it, or ids may be reused. `tests/itsm/test_migrations.py` fails
until the revision exists and makes what the code declares.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from pkgutil import walk_packages
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, MetaData, func, select

from opsflow.errors import PermanentError
from opsflow.itsm.migrations import premigration

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

_PG_LOCK = (0x6F707366, 0x6D696772)
"""The advisory lock (two int4 keys: "opsf", "migr") held while migrating on PostgreSQL; the
two-key form never collides with the one-key locks the store takes for other work."""
_alembic_lock = threading.Lock()
"""Alembic's `op` and `context` are module globals: one migration per process at a time."""


class UnknownSchemaError(PermanentError, RuntimeError):
    """The database holds tables of opsflow's names that opsflow did not make that way."""


class SchemaTooNewError(PermanentError, RuntimeError):
    """The database was migrated by a newer opsflow than this one."""


@dataclass(frozen=True)
class SchemaUpgrade:
    """What bringing a records database to head did.

    Attributes:
        before: its revision before, None when it had none (empty or made before migrations).
        after: its revision now, the head.
        premigration_tables: the tables it held when opsflow made it before migrations,
            else empty.
    """

    before: str | None
    after: str
    premigration_tables: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether anything was migrated."""
        return self.before != self.after


def alembic_config() -> Config:
    """An Alembic configuration for this package, wherever it is installed (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).resolve().parent))
    return config


@cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this code knows."""
    revision = _script().get_current_head()
    if revision is None:  # pragma: no cover - the package always ships its revisions
        raise RuntimeError("no migrations found")
    return revision


def records_metadata() -> MetaData:
    """The tables the code declares, every itsm module imported so none is left out."""
    for module in walk_packages(import_module("opsflow.itsm").__path__, "opsflow.itsm."):
        if not module.name.startswith(__name__):
            import_module(module.name)
    from opsflow.itsm.store.db import metadata

    return metadata


def current(conn: Connection) -> str | None:
    """The revision of the database `conn` reads, None when it has none."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | None = None) -> SchemaUpgrade:
    """Bring the records database at `url` (default: the configured one) to head."""
    from opsflow.itsm.store.db import Database

    db = Database(url)
    db.dispose()
    return db.schema


def upgrade_engine(engine: Engine) -> SchemaUpgrade:
    """Bring the database of a records `Database`'s engine to head, unless it is there already.

    The check costs two small reads; only a database behind head takes the lock.

    Raises:
        UnknownSchemaError: tables of opsflow's names that are not opsflow's.
        SchemaTooNewError: a revision this code does not know.
    """
    target = head()
    with engine.connect() as conn:
        found = current(conn)
    if found == target:
        return SchemaUpgrade(found, target)
    _known(found)
    with _alembic_lock, _migration(engine) as conn:
        before = current(conn)  # another process may have migrated while we waited
        _known(before)
        premigration_tables: list[str] = []
        if before is None:
            premigration_tables, differences = premigration.inspect_tables(conn)
            if differences:
                raise UnknownSchemaError(
                    "the records database holds tables opsflow did not make: "
                    + "; ".join(differences)
                    + ". Point OPSFLOW_DATABASE_URL at opsflow's database or an empty one."
                )
        if before != target:
            from alembic import command

            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return SchemaUpgrade(before, target, tuple(premigration_tables))


def _known(revision: str | None) -> None:
    from alembic.util import CommandError

    if revision is None:
        return
    try:
        _script().get_revision(revision)
    except CommandError as exc:
        raise SchemaTooNewError(
            f"the records database is at revision {revision}, which this opsflow does not "
            f"know (its newest is {head()}): a newer opsflow migrated it (run that one), or "
            "it is another application's database"
        ) from exc


@contextmanager
def _migration(engine: Engine) -> Iterator[Connection]:
    """One transaction for the whole migration, which only one process holds at a time.

    On SQLite foreign keys are off meanwhile (batch ALTERs copy tables) and checked before
    the commit, as Alembic advises; `engine` is a store's, whose writers BEGIN IMMEDIATE.
    """
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            with conn.begin():
                conn.execute(select(func.pg_advisory_xact_lock(*_PG_LOCK)))
                yield conn
            return
        driver = conn.connection.driver_connection
        assert driver is not None, "a checked-out connection has its driver's"
        driver.execute("PRAGMA foreign_keys=OFF")  # no effect inside a transaction: first
        try:
            with conn.execution_options(opsflow_write=True).begin():
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
        finally:
            driver.execute("PRAGMA foreign_keys=ON")


def new_revision(message: str, url: str) -> None:
    """Write a revision in versions/ for what the code's tables changed since head, found by
    comparing them with the scratch database at `url` (brought to head first)."""
    from alembic import command

    from opsflow.itsm.store.db import Database

    db = Database(url)
    try:
        with db.engine.connect() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            config.attributes["target_metadata"] = records_metadata()
            command.revision(config, message, autogenerate=True)
    finally:
        db.dispose()
