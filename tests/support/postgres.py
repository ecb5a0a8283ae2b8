"""A private PostgreSQL 15 cluster for the test session, made and run by the same code as
`opsflow up`'s (opsflow/runtime/postgres.py), but throwaway: a temporary directory, a free
loopback port, durability off for speed, removed when stopped."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from opsflow.runtime.postgres import (
    Cluster,
    PostgresPortInUseError,
    create_databases,
    make_cluster,
    stop_cluster,
)
from opsflow.runtime.postgres import start_cluster as start_server
from tests.support.serving import free_port


@dataclass
class PostgresCluster:
    """A running throwaway cluster and the databases the tests make in it."""

    cluster: Cluster

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

    def create_database(self, name: str) -> None:
        """A new empty database `name`."""
        if name in create_databases(self.cluster, [name]):
            return
        raise ValueError(f"database {name!r} exists already")

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
