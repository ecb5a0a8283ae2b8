"""Run commands on hosts over SSH: typed results, pinned host keys, bounded time, honest retries.

Connections are pooled per process and reused by every task of a flow run; a pooled
connection found dead is replaced. Commands are argument vectors, quoted here and nowhere
else, so a value can never become shell syntax on the host.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import paramiko
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from blocks.ssh import SshCredentials
from inventory.models import Host
from opsflow.errors import (
    CommandFailedError,
    CommandTimeoutError,
    HostKeyMismatchError,
    SSHPermanentError,
    SSHTransientError,
)
from tasks.retry import is_transient

TAIL_CHARS = 4000
"""How much of stdout and stderr a result keeps: the end, where errors are."""

IDLE_CLOSE_S = 60.0
"""A pooled connection unused this long is closed rather than reused."""

MASK = "********"


class CommandResult(BaseModel):
    """What one command did on one host."""

    host: str
    command: str = Field(description="The command as sent, secrets masked.")
    exit_status: int
    stdout: str = Field(description=f"Last {TAIL_CHARS} characters of standard output.")
    stderr: str = Field(description=f"Last {TAIL_CHARS} characters of standard error.")
    duration_s: float
    changed: bool | None = Field(
        default=None, description="Whether the command changed the host, where that is known."
    )

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0


def quote_command(argv: list[str]) -> str:
    """The shell command line for an argument vector, every argument quoted."""
    if not argv:
        raise ValueError("argv: a command needs at least one argument")
    return shlex.join(argv)


def _masked(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class _ConnectionPool:
    """Open SSH clients keyed by host identity; thread-safe, replaces dead or idle ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host_locks: dict[tuple, threading.Lock] = {}
        self._clients: dict[tuple, tuple[paramiko.SSHClient, float]] = {}
        self._credentials: dict[str, tuple[SshCredentials, float]] = {}

    @staticmethod
    def _key(host: Host) -> tuple:
        return (host.credentials, host.address, host.port, host.user, host.host_key)

    def credentials(self, name: str) -> SshCredentials:
        """The named block, cached for a minute so a fan-out loads it once."""
        with self._lock:
            cached = self._credentials.get(name)
            if cached and time.monotonic() - cached[1] < IDLE_CLOSE_S:
                return cached[0]
        block = SshCredentials.load(name)
        with self._lock:
            self._credentials[name] = (block, time.monotonic())
        return block

    def get(self, host: Host) -> paramiko.SSHClient:
        """A live, authenticated client for `host`, opening one if needed."""
        key = self._key(host)
        with self._lock:
            host_lock = self._host_locks.setdefault(key, threading.Lock())
        with host_lock:
            with self._lock:
                entry = self._clients.get(key)
            if entry is not None:
                client, last_used = entry
                transport = client.get_transport()
                alive = transport is not None and transport.is_active()
                if alive and time.monotonic() - last_used < IDLE_CLOSE_S:
                    with self._lock:
                        self._clients[key] = (client, time.monotonic())
                    return client
                client.close()
            client = _connect(host, self.credentials(host.credentials))
            with self._lock:
                self._clients[key] = (client, time.monotonic())
            return client

    def discard(self, host: Host) -> None:
        """Close and forget the client for `host`, so the next use reconnects."""
        with self._lock:
            entry = self._clients.pop(self._key(host), None)
        if entry is not None:
            entry[0].close()

    def close_all(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            entries, self._clients = list(self._clients.values()), {}
        for client, _ in entries:
            client.close()


_pool = _ConnectionPool()


def pooled_client(host: Host) -> paramiko.SSHClient:
    """The pooled, authenticated connection to `host` (for SFTP); do not close it."""
    return _pool.get(host)


def discard_connection(host: Host) -> None:
    """Drop the pooled connection to `host` after a failure, so the next use reconnects."""
    _pool.discard(host)


def close_connections() -> None:
    """Close every SSH connection this process holds (tests, and `opsflow` on exit)."""
    _pool.close_all()


def _connect(host: Host, credentials: SshCredentials) -> paramiko.SSHClient:
    """Open a connection, turning paramiko's failures into transient or permanent errors."""
    try:
        return credentials.get_client(
            host.address, port=host.port, username=host.user, host_key=host.host_key
        )
    except paramiko.BadHostKeyException as exc:
        raise HostKeyMismatchError(
            host.name,
            f"host key mismatch: presented {exc.key.get_name()} {exc.key.fingerprint}, "
            f"pinned {exc.expected_key.fingerprint}; refusing to connect",
        ) from None
    except paramiko.AuthenticationException as exc:
        raise SSHPermanentError(
            host.name, f"authentication as {host.user!r} refused: {exc}"
        ) from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        raise SSHTransientError(host.name, f"connection refused: {exc}") from None
    except TimeoutError as exc:
        raise SSHTransientError(host.name, f"connection timed out: {exc}") from None
    except (ConnectionError, EOFError, OSError) as exc:
        raise SSHTransientError(host.name, f"connection failed: {exc!r}") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostKeyMismatchError(
                host.name, "no pinned host key matches this host; refusing to connect"
            ) from None
        raise SSHTransientError(host.name, f"SSH negotiation failed: {exc}") from None
    except ValueError as exc:
        raise SSHPermanentError(host.name, f"credentials {host.credentials!r}: {exc}") from None


@contextmanager
def _channel_errors(host: Host, command: str) -> Iterator[None]:
    try:
        yield
    except TimeoutError:
        _pool.discard(host)
        raise CommandTimeoutError(host.name, "command timed out", command) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        _pool.discard(host)
        raise SSHTransientError(host.name, f"connection lost: {exc!r}", command) from None


def execute(
    host: Host,
    argv: list[str],
    timeout_s: float = 60.0,
    check: bool = True,
    secrets: Iterable[str] = (),
    stdin: bytes | None = None,
) -> CommandResult:
    """Run `argv` on `host` and wait for it, within `timeout_s`.

    Raises `CommandFailedError` on a non-zero exit when `check`, `CommandTimeoutError` when
    the command outlives its timeout, and `SSHTransientError` when the session's sshd died
    (paramiko reports exit status -1) or the connection broke.
    """
    secrets = list(secrets)
    command = quote_command(argv)
    shown = _masked(command, secrets)
    client = _pool.get(host)
    started = time.monotonic()
    with _channel_errors(host, shown):
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("transport closed")
        channel = transport.open_session(timeout=timeout_s)
        try:
            channel.settimeout(timeout_s)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            stdout, stderr = _drain(channel, started + timeout_s)
            exit_status = channel.recv_exit_status()
        finally:
            channel.close()
    duration = time.monotonic() - started
    if exit_status == -1:
        _pool.discard(host)
        raise SSHTransientError(host.name, "session ended without an exit status", shown)
    result = CommandResult(
        host=host.name,
        command=shown,
        exit_status=exit_status,
        stdout=_masked(stdout, secrets)[-TAIL_CHARS:],
        stderr=_masked(stderr, secrets)[-TAIL_CHARS:],
        duration_s=round(duration, 4),
    )
    if check and not result.ok:
        raise CommandFailedError(host.name, shown, exit_status, result.stderr or result.stdout)
    return result


def _drain(channel: paramiko.Channel, deadline: float) -> tuple[str, str]:
    """Read stdout and stderr to their end once the command exits, never past `deadline`.

    sshd may send the exit status before the command's last output, so after the exit
    status arrives both streams are still read to end-of-file.
    """
    out: list[bytes] = []
    err: list[bytes] = []
    while not channel.exit_status_ready():
        progressed = False
        if channel.recv_ready():
            out.append(channel.recv(65536))
            progressed = True
        if channel.recv_stderr_ready():
            err.append(channel.recv_stderr(65536))
            progressed = True
        if channel.closed and not progressed:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("command deadline passed")
        if not progressed:
            channel.status_event.wait(0.01)
    channel.settimeout(max(0.1, deadline - time.monotonic()))
    while chunk := channel.recv(65536):
        out.append(chunk)
    while chunk := channel.recv_stderr(65536):
        err.append(chunk)
    return (
        b"".join(out).decode("utf-8", "replace"),
        b"".join(err).decode("utf-8", "replace"),
    )


@task(
    cache_policy=NONE,
    retries=3,
    retry_delay_seconds=[1, 2, 4],
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient,
    timeout_seconds=600,
    task_run_name="run_command[{host.name}]",
)
def run_command(
    host: Host,
    argv: list[str],
    timeout_s: float = 60.0,
    check: bool = True,
) -> CommandResult:
    """Run one command on one host, retried on transient failures only.

    Use `run_command.with_options(retries=0)` for commands that must not run twice.
    """
    logger = get_run_logger()
    try:
        result = execute(host, argv, timeout_s=timeout_s, check=check)
    except Exception:
        logger.exception("%s: %s failed", host.name, quote_command(argv))
        raise
    logger.info(
        "%s: %s -> exit %s in %.2fs",
        host.name,
        result.command,
        result.exit_status,
        result.duration_s,
    )
    return result
