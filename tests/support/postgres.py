"""A private PostgreSQL 15 cluster for the test session, made and run by the same code as
`opsflow up`'s (opsflow/runtime/postgres.py), but throwaway: a temporary directory, a free
loopback port, durability off for speed, removed when stopped."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from opsflow.runtime.postgres import (
    Cluster,
    PostgresPortInUseError,
    make_cluster,
    stop_cluster,
)
from opsflow.runtime.postgres import start_cluster as start_server
from tests.support.serving import free_port


@dataclass
class PostgresCluster:
    """A running throwaway cluster and the databases the tests make in it."""

    cluster: Cluster
    _numbers: Iterator[int] = field(default_factory=itertools.count)

    @property
    def directory(self) -> Path:
        return self.cluster.directory

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def data(self) -> Path:
        return self.cluster.data

    def url(self, database: str, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of `database` through `driver` (psycopg, asyncpg)."""
        return self.cluster.url(database, driver)

    def create_database(self, name: str, template: str | None = None) -> None:
        """A new database `name`: empty, or a copy of database `template`, which nobody may
        be connected to while it is copied."""
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.cluster.connect(autocommit=True) as connection:
            connection.execute(statement)

    @contextmanager
    def scratch_database(self, prefix: str, template: str | None = None) -> Iterator[str]:
        """The URL of a new database named from `prefix` (empty, or a copy of `template`),
        dropped afterwards with whatever connections to it are still open."""
        name = f"{prefix}_{next(self._numbers)}"
        self.create_database(name, template)
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, closing whatever connections to it are still open."""
        from psycopg import sql

        with self.cluster.connect(autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        """Stop the server at once (fast shutdown) and delete its files."""
        try:
            stop_cluster(self.cluster)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(attempts: int = 3) -> PostgresCluster:
    """Make a cluster in a new temporary directory and start it; ready when it returns.

    The port is free when chosen but may be taken before the server binds it: then a new
    port is tried, up to `attempts` times.
    """
    directory = Path(tempfile.mkdtemp(prefix="opsflow-postgres-"))
    try:
        for _ in range(attempts):
            cluster = make_cluster(directory, free_port(), durable=False)
            try:
                start_server(cluster)
            except PostgresPortInUseError:
                continue
            return PostgresCluster(cluster)
        raise RuntimeError(f"PostgreSQL found no free port in {attempts} attempts")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
