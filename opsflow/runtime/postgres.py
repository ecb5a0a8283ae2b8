"""The PostgreSQL cluster opsflow owns: made once in a directory of the opsflow home, run, stopped.

Debian's `postgresql-15` binaries, never its system service: no `pg_ctlcluster`, nothing
enabled at boot. The cluster listens on 127.0.0.1 only (no Unix socket) and takes password
(SCRAM) logins only, never `trust`; its one role's password is generated once and kept 0600
beside the data directory. Run as root, the server runs as Debian's `postgres` user, which
PostgreSQL requires (it refuses to run as root).

Layout of the cluster's directory (`~/.opsflow/postgres` for `opsflow up`):
`password` (0600, ours), `data/` (the cluster, the server's user's, 0700).

One module, under 500 lines, on purpose: one cluster's life (made, started, ready, stopped),
whose every step depends on the same facts decided here (who owns the files, which user runs
the server, which port and password); the tests' throwaway cluster uses the same code.
"""

from __future__ import annotations

import errno
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from opsflow.errors import PermanentError

if TYPE_CHECKING:
    import psycopg

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
PACKAGE = "postgresql-15"
SYSTEM_USER = "postgres"
"""Who runs the server when opsflow runs as root: PostgreSQL refuses to run as root."""
ROLE = "opsflow"
"""The cluster's one role, its superuser: every opsflow process logs in as it."""
DATABASES = ("prefect", "records")
"""The Prefect server's database and opsflow's records."""
DEFAULT_PORT = 15432
PORT_SETTING = "OPSFLOW_POSTGRES_PORT"
PASSWORD_FILE = "password"  # noqa: S105 (a file name)
DATA_DIR = "data"
CONF_FILE = "opsflow.conf"
"""In the data directory: the settings opsflow owns, rewritten by every `make_cluster`."""
START_TIMEOUT_S = 60.0
"""After a crash, startup replays the WAL first: give it time."""

DURABLE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "300",
    "password_encryption": "'scram-sha-256'",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
SCRATCH_SETTINGS: dict[str, str] = {
    **DURABLE_SETTINGS,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
"""For throwaway clusters (the tests'): nothing survives a crash, everything is faster."""
HBA = (
    "# Written by opsflow (opsflow/runtime/postgres.py), rewritten whenever it starts the\n"
    "# cluster: password (SCRAM) logins over loopback TCP only; no trust, no peer, no socket.\n"
    "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
    "host    all       all   127.0.0.1/32  scram-sha-256\n"
)
# The server, initdb and pg_ctl get this environment, none of the secrets in opsflow's.
_SERVER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


class PostgresError(PermanentError):
    """The cluster cannot be made, started or reached; the message says why and what to do."""


class PostgresPortInUseError(PostgresError):
    """Another program listens on the cluster's port."""


class PostgresRunningError(PostgresError):
    """The cluster is already running, started by someone else."""


@dataclass(frozen=True)
class Cluster:
    """A cluster made by `make_cluster`: its directory, its port, the binaries that run it.

    Its password is read from its file when needed, never held in a field, so that no
    repr, log or error shows it.
    """

    directory: Path
    port: int
    bin_dir: Path = BIN_DIR

    @property
    def data(self) -> Path:
        return self.directory / DATA_DIR

    @property
    def password_file(self) -> Path:
        return self.directory / PASSWORD_FILE

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of `database` through `driver` (psycopg, asyncpg), password
        included: for environments and 0600 files, never for a command line or a log."""
        password = quote(self.password(), safe="")
        return f"postgresql+{driver}://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection:
        """A psycopg connection to `database` as the cluster's role."""
        import psycopg

        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=ROLE,
            password=self.password(),
            dbname=database,
            **kwargs,
        )


def make_cluster(
    directory: Path, port: int = DEFAULT_PORT, *, durable: bool = True, bin_dir: Path = BIN_DIR
) -> Cluster:
    """The cluster in `directory`, made there the first time (initdb), configured every time.

    Idempotent: an existing cluster keeps its data and password; its settings (port,
    loopback only, durability) and its `pg_hba.conf` (SCRAM only) are rewritten from this
    module, so that what runs is what the code says. Starts nothing.

    Args:
        directory: Where the cluster lives; made 0700 if missing.
        port: The loopback TCP port the server listens on.
        durable: fsync and full-page writes on; False for throwaway clusters (tests).
        bin_dir: The PostgreSQL binaries (Debian's `postgresql-15` by default).
    """
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (bin_dir / binary).is_file():
            raise PostgresError(
                f"PostgreSQL is not installed: {bin_dir / binary} is missing; install the "
                f"Debian package {PACKAGE} (scripts/install-debian-packages does)"
            )
    owner = _owner()
    directory = directory.absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    if owner is not None:
        _grant_traverse(directory, owner)
    cluster = Cluster(directory, port, bin_dir)
    if (cluster.data / "PG_VERSION").is_file() and not cluster.password_file.exists():
        raise PostgresError(
            f"{cluster.password_file} is gone, and with it the password of the cluster in "
            f"{cluster.data}: restore it, or move {cluster.data} away to make a new, empty one"
        )
    _ensure_password(cluster.password_file)
    if not (cluster.data / "PG_VERSION").is_file():
        _initdb(cluster, owner, durable)
    settings = DURABLE_SETTINGS if durable else SCRATCH_SETTINGS
    conf = "".join(f"{key} = {value}\n" for key, value in {**settings, "port": str(port)}.items())
    _write_owned(cluster.data / CONF_FILE, "# Written by opsflow; edits are lost.\n" + conf, owner)
    _write_owned(cluster.data / "pg_hba.conf", HBA, owner)
    return cluster


def server_command(cluster: Cluster) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run the server in the foreground, for a supervisor.

    As the cluster's owner; SIGINT stops it at once and cleanly (PostgreSQL's fast
    shutdown), and it is sent that SIGINT by the kernel if the thread that started it dies
    (setpriv's parent-death signal), so a killed `opsflow up` leaves no server behind.
    """
    argv = [str(cluster.bin_dir / "postgres"), "-D", str(cluster.data)]
    return _as_owner(argv, _owner(), parent_death_signal=signal.SIGINT), dict(_SERVER_ENV)


def check_can_start(cluster: Cluster) -> None:
    """Raise if the cluster already runs or another program holds its port.

    A `postmaster.pid` left by a server that was killed is no obstacle: PostgreSQL sees its
    process is gone and starts anyway.
    """
    pid = running_pid(cluster)
    if pid is not None:
        raise PostgresRunningError(
            f"PostgreSQL already runs on {cluster.data} (pid {pid}): another `opsflow up` is "
            "running, or one was killed and left it; stop that `up`, or the server: "
            f"kill -INT {pid}"
        )
    if not _port_free(cluster.port):
        raise PostgresPortInUseError(
            f"127.0.0.1:{cluster.port}, PostgreSQL's port, is taken by another program: stop it, "
            f"or set {PORT_SETTING} to a free port"
        )


def running_pid(cluster: Cluster) -> int | None:
    """The pid of the server running on this cluster's data directory, if one runs."""
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().split("\n", 1)[0])
        # The postmaster works in its data directory: a recycled pid does not.
        working_in = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return None
    return pid if Path(working_in) == cluster.data.resolve() else None


def wait_until_ready(
    cluster: Cluster,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Poll until the server accepts the role's password login; raise if `process` exits."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise _start_failure(
                cluster, f"PostgreSQL exited with status {process.returncode}", log
            )
        try:
            with cluster.connect(connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            last = str(exc).strip()
            if "password authentication failed" in last:
                raise PostgresError(
                    f"PostgreSQL on 127.0.0.1:{cluster.port} refused the password in "
                    f"{cluster.password_file}: is it another cluster's port, or was the "
                    "file replaced?"
                ) from None
        time.sleep(0.2)
    raise _start_failure(
        cluster, f"PostgreSQL did not accept connections within {timeout_s:.0f}s ({last})", log
    )


def create_databases(cluster: Cluster, names: Iterable[str] = DATABASES) -> list[str]:
    """Create each database of `names` that is missing; return those created."""
    from psycopg import sql

    names = list(names)
    with cluster.connect(autocommit=True) as connection:
        existing = {
            row[0]
            for row in connection.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names]
            )
        }
        created = [name for name in names if name not in existing]
        for name in created:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return created


def start_cluster(cluster: Cluster, timeout_s: float = START_TIMEOUT_S) -> None:
    """Start the server in the background (`pg_ctl start -w`); ready when this returns.

    For clusters nothing supervises (the tests'); `opsflow up` runs `server_command` under
    its supervisor instead, which starts it again if it dies.
    """
    check_can_start(cluster)
    log = cluster.data / "server.log"
    argv = [str(cluster.bin_dir / "pg_ctl"), "start", "-D", str(cluster.data), "-w"]
    started = _run_as_owner([*argv, "-t", str(int(timeout_s)), "-l", str(log)])
    if started.returncode != 0:
        if "could not bind" in _tail(log):
            raise PostgresPortInUseError(
                f"127.0.0.1:{cluster.port} was taken before PostgreSQL could listen on it"
            )
        raise _start_failure(cluster, f"pg_ctl start failed: {started.stderr.strip()}", log)
    wait_until_ready(cluster, timeout_s=timeout_s)


def stop_cluster(cluster: Cluster, timeout_s: float = START_TIMEOUT_S) -> bool:
    """Stop the server at once and cleanly (`pg_ctl stop -m fast`); False if it was not running."""
    if running_pid(cluster) is None:
        return False
    argv = [str(cluster.bin_dir / "pg_ctl"), "stop", "-D", str(cluster.data), "-m", "fast"]
    stopped = _run_as_owner([*argv, "-w", "-t", str(int(timeout_s))])
    if stopped.returncode != 0 and running_pid(cluster) is not None:
        raise PostgresError(f"pg_ctl stop failed on {cluster.data}: {stopped.stderr.strip()}")
    return True


def _owner() -> pwd.struct_passwd | None:
    """Who runs the server: the `postgres` user when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(
            f"as root, opsflow runs PostgreSQL as the `{SYSTEM_USER}` user, which does not "
            f"exist: install the Debian package {PACKAGE}"
        ) from None


def _as_owner(
    argv: list[str],
    owner: pwd.struct_passwd | None,
    parent_death_signal: signal.Signals | None = None,
) -> list[str]:
    """`argv` run as the cluster's owner, by setpriv, which then execs it (no process between)."""
    options = []
    if owner is not None:
        options += [f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups"]
    if parent_death_signal is not None:
        options += ["--pdeathsig", parent_death_signal.name]
    return ["setpriv", *options, "--", *argv] if options else argv


def _run_as_owner(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_owner(argv, _owner()),
        env=dict(_SERVER_ENV),
        capture_output=True,
        text=True,
        check=False,
    )


def _grant_traverse(directory: Path, owner: pwd.struct_passwd) -> None:
    """Let `owner` reach `directory`: an ACL granting traverse (x) alone on each directory
    from / down to it that does not let others traverse it already (/root, the 0700 home).

    Why an ACL: the server must run unprivileged, yet its data lives in a private home
    (~/.opsflow, 0700; /root, 0700) that must stay private to everyone else. Traverse
    without read lets `owner` open only paths it already knows and list nothing; the
    server's data directory is its own, and every secret of opsflow's (the password file,
    keys, tokens) is 0600 or in a 0700 directory that the ACL does not touch. This grants
    nothing the server's user did not have: as the cluster's superuser it reads every
    record and Prefect's database anyway. `chmod` resets an ACL's mask (secure_home's
    0700 does), so this runs every time.
    """
    for path in (*reversed(directory.parents), directory):
        info = path.stat()
        if info.st_mode & stat.S_IXOTH or info.st_uid == owner.pw_uid:
            continue
        try:
            granted = subprocess.run(
                ["setfacl", "-m", f"u:{owner.pw_name}:x", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise PostgresError(
                "setfacl is missing: install the Debian package acl "
                "(scripts/install-debian-packages does)"
            ) from None
        if granted.returncode != 0:
            raise PostgresError(
                f"cannot let the `{owner.pw_name}` user traverse {path}: {granted.stderr.strip()}"
            )
    reachable = subprocess.run(
        _as_owner(["test", "-x", str(directory)], owner), env=dict(_SERVER_ENV), check=False
    )
    if reachable.returncode != 0:
        raise PostgresError(
            f"the `{owner.pw_name}` user cannot reach {directory} even with an ACL granting it "
            "traverse: does its file system support POSIX ACLs?"
        )


def _ensure_password(path: Path) -> None:
    """Generate the role's password once, into a 0600 file of ours."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    if not path.read_text().strip():
        raise PostgresError(f"{path} is empty: the cluster's password is lost")


def _initdb(cluster: Cluster, owner: pwd.struct_passwd | None, durable: bool) -> None:
    """Make the cluster: its role (with the password, hashed by initdb: it never travels
    in SQL, where a log could catch it), UTF-8, SCRAM for every login."""
    data = cluster.data
    if data.exists() and any(data.iterdir()):
        raise PostgresError(
            f"{data} holds files but no cluster (an interrupted initdb?): move it away and "
            "start again"
        )
    data.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        os.chown(data, owner.pw_uid, owner.pw_gid)
    # initdb, run as the owner, must read the password: a copy only it can read, removed after.
    password_copy = cluster.directory / "initdb-password"
    _write_owned(password_copy, cluster.password() + "\n", owner)
    try:
        made = _run_as_owner(
            [
                *(str(cluster.bin_dir / "initdb"), "-D", str(data), "-U", ROLE),
                *("--pwfile", str(password_copy), "--auth=scram-sha-256"),
                *("--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"),
                *(() if durable else ("--no-sync",)),
            ]
        )
    finally:
        password_copy.unlink(missing_ok=True)
    if made.returncode != 0:
        raise PostgresError(f"initdb failed in {data}: {made.stderr.strip()}")
    fd = os.open(data / "postgresql.conf", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    with os.fdopen(fd, "a") as conf:
        conf.write(
            f"\n# opsflow's settings, rewritten whenever it starts the cluster\n"
            f"include_if_exists = '{CONF_FILE}'\n"
        )


def _write_owned(path: Path, text: str, owner: pwd.struct_passwd | None) -> None:
    """Replace `path` with `text`, 0600, owned by `owner`.

    As root in a directory the server's user can write: never through a symlink it planted
    (a new file, then a rename over whatever is there).
    """
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        if owner is not None:
            os.fchown(out.fileno(), owner.pw_uid, owner.pw_gid)
        out.write(text)
    partial.replace(path)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As PostgreSQL binds: only a listener makes it fail, not TIME_WAIT connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _tail(log: Path | None, lines: int = 15) -> str:
    """The last lines of the server's log, for a human: what PostgreSQL said as it failed."""
    if log is None or not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _start_failure(cluster: Cluster, what: str, log: Path | None) -> PostgresError:
    tail = _tail(log)
    if "could not bind" in tail or "Address already in use" in tail:
        return PostgresPortInUseError(
            f"{what}: 127.0.0.1:{cluster.port} is taken by another program; stop it, or set "
            f"{PORT_SETTING} to a free port"
        )
    return PostgresError(f"{what}; its log {log} ends:\n{tail}" if tail else what)
