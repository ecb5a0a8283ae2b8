"""A private PostgreSQL 15 cluster for the test session: Debian's binaries, a temporary data
directory, loopback TCP on a free port, durability off for speed, removed when stopped."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support import free_port, wait_for

BINARIES = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
SYSTEM_USER = "postgres"
"""initdb refuses to run as root: as root the cluster is run by Debian's `postgres` user."""

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "300",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}


@dataclass
class PostgresCluster:
    """A running cluster: its data directory, port, and the databases made in it."""

    directory: Path
    port: int

    def url(self, database: str, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of `database` through `driver` (psycopg, asyncpg)."""
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        """A new empty database `name` (a plain identifier chosen by the tests)."""
        if not name.isidentifier():
            raise ValueError(f"database name {name!r} is not a plain identifier")
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        """Drop database `name`, closing whatever connections to it are still open."""
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server at once (fast shutdown) and delete its files."""
        try:
            _run(_as_owner([str(BINARIES / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast"]))
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"


def start_cluster(attempts: int = 3) -> PostgresCluster:
    """initdb a cluster in a new temporary directory and start it; ready when it returns.

    The port is free when chosen but may be taken before the server binds it: then a new
    port is tried, up to `attempts` times.
    """
    if not (BINARIES / "initdb").exists():
        raise RuntimeError(
            f"PostgreSQL 15 is not installed ({BINARIES}/initdb is missing): "
            "run scripts/install-debian-packages"
        )
    directory = Path(tempfile.mkdtemp(prefix="opsflow-postgres-"))
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        data = directory / "data"
        _run(
            _as_owner(
                [
                    *(str(BINARIES / "initdb"), "-D", str(data), "-U", SUPERUSER),
                    *("--auth=trust", "--encoding=UTF8", "--no-sync"),
                ]
            )
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in SETTINGS.items())
        for _ in range(attempts):
            cluster = PostgresCluster(directory, free_port())
            log = directory / "server.log"
            started = subprocess.run(
                _as_owner(
                    [
                        *(str(BINARIES / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "60"),
                        *("-l", str(log), "-o", f"-p {cluster.port}"),
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if started.returncode == 0:
                wait_for(lambda c=cluster: _answers(c), 30, "PostgreSQL to accept connections")
                return cluster
            if "could not bind" not in log.read_text(errors="replace"):
                raise RuntimeError(f"pg_ctl start failed: {started.stderr}{log.read_text()}")
        raise RuntimeError(f"PostgreSQL found no free port in {attempts} attempts")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _answers(cluster: PostgresCluster) -> bool:
    try:
        with psycopg.connect(cluster._dsn("postgres"), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _as_owner(command: list[str]) -> list[str]:
    """`command` run as the cluster's owner: `postgres` when we are root, else ourselves."""
    return ["runuser", "-u", SYSTEM_USER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr}")
