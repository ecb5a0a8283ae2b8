"""The PostgreSQL cluster `opsflow up` owns, on real PostgreSQL 15: made once in a private
home, password logins only, run under the supervisor as `up` runs it, restarted after a
crash, stopped with whoever started it, its data kept from one start to the next."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from opsflow.runtime.postgres import (
    SYSTEM_USER,
    Cluster,
    PostgresError,
    PostgresPortInUseError,
    PostgresRunningError,
    check_can_start,
    create_databases,
    make_cluster,
    running_pid,
    server_command,
    wait_until_ready,
)
from opsflow.runtime.supervisor import Supervisor
from tests.support.serving import free_port
from tests.support.waiting import wait_for

NAME = "PostgreSQL"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def start(cluster: Cluster, supervisor: Supervisor, log: Path) -> subprocess.Popen:
    """As `opsflow up` does: under the supervisor, in the foreground, ready when it returns."""
    check_can_start(cluster)
    argv, env = server_command(cluster)
    process = supervisor.start(NAME, argv, log, env=env, stop_signal=signal.SIGINT)
    wait_until_ready(cluster, process, log)
    return process


def count_rows(cluster: Cluster) -> int:
    with cluster.connect("records") as connection:
        return connection.execute("SELECT count(*) FROM kept").fetchone()[0]


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A private opsflow home (0700) in a 0700 directory of its own.

    Not under pytest's temporary root: every pytest session that starts makes that 0700
    again, and a chmod takes back the traverse an ACL granted the cluster's user.
    """
    parent = Path(tempfile.mkdtemp(prefix="opsflow-runtime-"))
    home = parent / "home"
    home.mkdir(mode=0o700)
    yield home
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(home: Path) -> Cluster:
    return make_cluster(home / "postgres", free_port())


@pytest.fixture
def running(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Supervisor, Path]]:
    supervisor = Supervisor({})
    log = tmp_path / "postgres.log"
    start(cluster, supervisor, log)
    yield supervisor, log
    supervisor.stop(NAME, 60)
    assert running_pid(cluster) is None


def test_made_once_private_durable_and_password_only(cluster: Cluster, home: Path) -> None:
    password = cluster.password()
    assert len(password) >= 40
    assert mode(cluster.password_file) == 0o600
    # 0700, or 0710 when the mode's group bits show the ACL mask of the postgres user's traverse.
    assert mode(home) & 0o067 == 0
    assert mode(cluster.directory) & 0o067 == 0
    hba = (cluster.data / "pg_hba.conf").read_text()
    assert "trust" not in hba.replace("no trust", "")
    assert [line.split() for line in hba.splitlines() if not line.startswith("#")] == [
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]
    ]
    conf = (cluster.data / "opsflow.conf").read_text()
    assert "fsync = on" in conf and f"port = {cluster.port}" in conf
    assert "listen_addresses = '127.0.0.1'" in conf and "unix_socket_directories = ''" in conf
    if os.geteuid() == 0:
        assert (cluster.data).stat().st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid
        assert cluster.password_file.stat().st_uid == 0, "the password stays ours"

    version = (cluster.data / "PG_VERSION").stat()
    again = make_cluster(cluster.directory, cluster.port)
    assert again == cluster
    assert again.password() == password, "made once"
    assert (cluster.data / "PG_VERSION").stat().st_ino == version.st_ino, "no second initdb"


def test_password_logins_only_as_an_unprivileged_user(cluster: Cluster, running) -> None:
    with cluster.connect() as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("opsflow",)
    for password in ("", "guess"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host="127.0.0.1", port=cluster.port, user="opsflow", password=password,
                dbname="postgres", connect_timeout=5,
            )  # fmt: skip
    impostor = Cluster(cluster.directory.parent / "impostor", cluster.port)
    impostor.directory.mkdir(exist_ok=True)
    impostor.password_file.write_text("not the role's password\n")
    with pytest.raises(PostgresError, match="refused the password in"):
        wait_until_ready(impostor, timeout_s=30)
    pid = running_pid(cluster)
    assert pid is not None
    uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
    assert uid == (pwd.getpwnam(SYSTEM_USER).pw_uid if os.geteuid() == 0 else os.geteuid())
    assert b"PREFECT" not in Path(f"/proc/{pid}/environ").read_bytes(), "none of our secrets"
    assert cluster.password().encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_second_start_is_refused_and_a_taken_port_named(cluster: Cluster, running) -> None:
    with pytest.raises(PostgresRunningError, match=r"already runs .* \(pid \d+\)"):
        check_can_start(cluster)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        elsewhere = Cluster(cluster.directory.parent / "other", other.getsockname()[1])
        with pytest.raises(PostgresPortInUseError, match="OPSFLOW_POSTGRES_PORT"):
            check_can_start(elsewhere)


def test_databases_made_if_missing_and_data_kept_across_restarts(
    cluster: Cluster, tmp_path: Path
) -> None:
    supervisor = Supervisor({})
    start(cluster, supervisor, tmp_path / "postgres.log")
    try:
        assert set(create_databases(cluster)) <= {"prefect", "records"}
        assert create_databases(cluster) == [], "made once"
        with cluster.connect("records", autocommit=True) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
            connection.execute("INSERT INTO kept VALUES (1)")
        before = count_rows(cluster)
    finally:
        supervisor.stop(NAME, 60)
    assert running_pid(cluster) is None
    assert not (cluster.data / "postmaster.pid").exists(), "stopped cleanly"

    make_cluster(cluster.directory, cluster.port)
    start(cluster, supervisor, tmp_path / "postgres.log")
    try:
        assert count_rows(cluster) == before
    finally:
        supervisor.stop(NAME, 60)


def test_a_killed_server_is_started_again_despite_its_pid_file(cluster: Cluster, running) -> None:
    supervisor, log = running
    create_databases(cluster)
    with cluster.connect("records", autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        connection.execute("INSERT INTO kept VALUES (2)")
    before = count_rows(cluster)
    killed = supervisor.process(NAME)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    assert (cluster.data / "postmaster.pid").exists(), "a stale pid file is left"

    def restarted() -> bool:
        supervisor.check()
        try:
            wait_until_ready(cluster, supervisor.process(NAME), log, timeout_s=5)
        except PostgresError:
            return False
        return True

    wait_for(restarted, 60, "the supervisor to start PostgreSQL again")
    assert supervisor.process(NAME).pid != killed.pid
    assert count_rows(cluster) == before, "committed rows survive the crash"


SUPERVISING = """
import signal, sys
from pathlib import Path
from opsflow.runtime.supervisor import Supervisor
from opsflow.runtime.postgres import make_cluster, server_command, wait_until_ready

cluster = make_cluster(Path(sys.argv[1]), int(sys.argv[2]))
argv, env = server_command(cluster)
process = Supervisor({}).start("PostgreSQL", argv, Path(sys.argv[3]), env=env,
                               stop_signal=signal.SIGINT)
wait_until_ready(cluster, process)
print("ready", flush=True)
signal.pause()  # until the test kills this process
"""


def test_a_killed_supervisor_leaves_no_server_behind(cluster: Cluster, tmp_path: Path) -> None:
    supervising = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(SUPERVISING),
            str(cluster.directory),
            str(cluster.port),
            str(tmp_path / "postgres.log"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert supervising.stdout.readline().strip() == "ready"
        pid = running_pid(cluster)
        assert pid is not None
        supervising.send_signal(signal.SIGKILL)
        supervising.wait(10)
        wait_for(lambda: gone(pid), 30, "PostgreSQL to stop with its supervisor")
        assert running_pid(cluster) is None
        assert not (cluster.data / "postmaster.pid").exists(), "a clean shutdown"
    finally:
        supervising.kill()
        supervising.wait(10)


def test_a_lost_password_is_named_not_replaced(cluster: Cluster) -> None:
    kept = cluster.password_file.with_name("kept")
    cluster.password_file.rename(kept)
    try:
        with pytest.raises(PostgresError, match="is gone, and with it the password"):
            make_cluster(cluster.directory, cluster.port)
        assert not cluster.password_file.exists(), "no new password for an old cluster"
    finally:
        kept.rename(cluster.password_file)


def test_missing_binaries_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(PostgresError, match="install the Debian package postgresql-15"):
        make_cluster(tmp_path / "postgres", free_port(), bin_dir=tmp_path / "nowhere")
    assert not (tmp_path / "postgres").exists(), "nothing made"
