"""Run commands on hosts over SSH: typed results, pinned host keys, bounded time, honest retries.

Connections are pooled per process and reused by every task of a flow run. Each host's
connection carries at most `MAX_SESSIONS_PER_HOST` sessions at once (below sshd's default
`MaxSessions` of 10); a failed command closes only its own channel, and the connection is
replaced only when it is dead. Idle connections are closed by a reaper thread, which ends
when no connection is open. A command's standard output is kept whole, up to a bound that
fails loudly; a command that outlives its timeout is killed on the host. Commands are
argument vectors, quoted here and nowhere else, so a value can never become shell syntax.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paramiko
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from opsflow.blocks.ssh import SshCredentials
from opsflow.errors import (
    CommandFailedError,
    CommandTimeoutError,
    HostKeyMismatchError,
    OutputTooLargeError,
    SSHPermanentError,
    SSHTransientError,
)
from opsflow.inventory.models import Host
from opsflow.tasks.retry import is_transient

TAIL_CHARS = 4000
"""How much of stderr a result keeps: the end, where errors are."""

MAX_OUTPUT_BYTES = 1 << 20
"""Default bound on a command's standard output; more fails with `OutputTooLargeError`."""

MAX_SESSIONS_PER_HOST = 8
"""Sessions open at once on one host's connection, below sshd's default MaxSessions (10)."""

IDLE_CLOSE_S = 60.0
"""A pooled connection unused this long is closed (and its transport thread ends)."""

BACKSTOP_S = 30.0
"""The host kills a command this long after its timeout, should this process die first."""

KILL_TIMEOUT_S = 5.0
"""How long stopping a timed-out command on its host may take."""

MASK = "********"

_log = logging.getLogger(__name__)


class CommandResult(BaseModel):
    """What one command did on one host."""

    host: str
    command: str = Field(description="The command as sent, secrets masked.")
    exit_status: int
    stdout: str = Field(description="The whole standard output (within the command's bound).")
    stderr: str = Field(description=f"Last {TAIL_CHARS} characters of standard error.")
    duration_s: float
    changed: bool | None = Field(
        default=None, description="Whether the command changed the host, where that is known."
    )

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0

    @property
    def detail(self) -> str:
        """One line for a report: the command, its exit status and how long it took."""
        return f"{self.command} -> exit {self.exit_status} in {self.duration_s:.2f}s"


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


@dataclass
class _HostConnection:
    """One host's pooled connection, the sessions on it, and when it was last used."""

    sessions: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_SESSIONS_PER_HOST)
    )
    connecting: threading.Lock = field(default_factory=threading.Lock)
    client: paramiko.SSHClient | None = None
    in_use: int = 0
    last_used: float = 0.0


class _ConnectionPool:
    """Open SSH clients keyed by host identity; bounds sessions per host, reaps idle ones."""

    def __init__(self, idle_close_s: float = IDLE_CLOSE_S) -> None:
        self.idle_close_s = idle_close_s
        self._lock = threading.Lock()
        self._hosts: dict[tuple, _HostConnection] = {}
        self._credentials: dict[str, tuple[SshCredentials, float]] = {}
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()

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

    @contextmanager
    def session(self, host: Host, deadline: float) -> Iterator[paramiko.SSHClient]:
        """A live client for `host` with one of its session slots held until the block ends."""
        key = self._key(host)
        with self._lock:
            # Not setdefault: building an entry (two locks) under the pool's lock on every
            # command made a fan-out's threads queue here for the GIL.
            entry = self._hosts.get(key)
            if entry is None:
                entry = self._hosts[key] = _HostConnection()
        if not entry.sessions.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise SSHTransientError(
                host.name, f"no free SSH session: {MAX_SESSIONS_PER_HOST} already in use"
            )
        try:
            client = self._checkout(host, entry)
            try:
                yield client
            finally:
                with self._lock:
                    entry.in_use -= 1
                    entry.last_used = time.monotonic()
        finally:
            entry.sessions.release()

    def _checkout(self, host: Host, entry: _HostConnection) -> paramiko.SSHClient:
        """The entry's client, counted as in use; a dead or long-idle one is replaced."""
        with entry.connecting:
            with self._lock:
                client = entry.client
                transport = client.get_transport() if client is not None else None
                alive = transport is not None and transport.is_active()
                fresh = entry.in_use or time.monotonic() - entry.last_used < self.idle_close_s
                if client is not None and alive and fresh:
                    entry.in_use += 1
                    return client
                entry.client = None
            if client is not None:
                client.close()
            client = _connect(host, self.credentials(host.credentials))
            with self._lock:
                entry.client = client
                entry.in_use += 1
                entry.last_used = time.monotonic()
                if self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._reap, name="opsflow-ssh-reaper", daemon=True
                    )
                    self._reaper.start()
            return client

    def discard(self, host: Host, client: paramiko.SSHClient) -> None:
        """Close `client` after its connection died, and forget it if it is still pooled."""
        with self._lock:
            entry = self._hosts.get(self._key(host))
            if entry is not None and entry.client is client:
                entry.client = None
        client.close()

    def _reap(self) -> None:
        """Close connections idle for `idle_close_s`; return once none is open."""
        while True:
            with self._lock:
                now = time.monotonic()
                idle: list[paramiko.SSHClient] = []
                next_check: float | None = None
                for entry in self._hosts.values():
                    if entry.client is None:
                        continue
                    due = now + self.idle_close_s
                    if not entry.in_use:
                        due = entry.last_used + self.idle_close_s
                        if due <= now:
                            idle.append(entry.client)
                            entry.client = None
                            continue
                    next_check = due if next_check is None else min(next_check, due)
                if next_check is None:
                    self._reaper = None
                self._wake.clear()
            for client in idle:
                client.close()
            if next_check is None:
                return
            self._wake.wait(max(0.01, next_check - time.monotonic()))

    def open_count(self) -> int:
        """Pooled connections whose transport is up."""
        with self._lock:
            clients = [e.client for e in self._hosts.values() if e.client is not None]
        return sum(1 for client in clients if (t := client.get_transport()) and t.is_active())

    def close_all(self) -> None:
        """Close every pooled connection (sessions still running on them fail)."""
        with self._lock:
            clients = [e.client for e in self._hosts.values() if e.client is not None]
            for entry in self._hosts.values():
                entry.client = None
            self._wake.set()
        for client in clients:
            client.close()


_pool = _ConnectionPool()


def warm_connection(host: Host, timeout_s: float = 10.0) -> None:
    """Open `host`'s pooled connection now unless one is open, so that a flow about to act
    on it does not wait for the handshake (0.1-0.15 s of the closed loop, measured).

    Opens no session and runs nothing. A failure is only logged: the flow's own command
    meets it again and reports it, with its retries.
    """
    try:
        with _pool.session(host, time.monotonic() + timeout_s):
            pass
    except Exception as exc:
        _log.info("%s: could not open a connection ahead of the flow: %s", host.name, exc)


def open_connections() -> int:
    """SSH connections this process holds open in its pool (one per host at most)."""
    return _pool.open_count()


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


_REFUSED = "Unable to open channel."
"""paramiko's message for a channel the server refused, when the refusal itself was lost."""


def _open_channel(host: Host, client: paramiko.SSHClient, timeout_s: float) -> paramiko.Channel:
    """A new session channel on the pooled connection; refusals are transient, nothing ran."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        _pool.discard(host, client)
        raise SSHTransientError(host.name, "connection closed before the command started")
    deadline, pause = time.monotonic() + timeout_s, 0.05
    while True:
        try:
            channel = transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
            break
        except paramiko.SSHException as exc:
            # sshd still counts sessions whose close it has not processed against
            # MaxSessions: nothing ran, so asking again shortly is safe. paramiko keeps the
            # refusal (a ChannelException) on the transport, where a refusal of another
            # thread's channel can take it: a plain "Unable to open channel." is one too.
            refused = isinstance(exc, paramiko.ChannelException) or str(exc) == _REFUSED
            if not refused or not transport.is_active() or time.monotonic() + pause > deadline:
                if not transport.is_active():
                    _pool.discard(host, client)
                raise SSHTransientError(host.name, f"no session opened: {exc!r}") from None
            time.sleep(pause)
            pause = min(2 * pause, 0.5)
        except (EOFError, OSError) as exc:
            if not transport.is_active():
                _pool.discard(host, client)
            raise SSHTransientError(host.name, f"no session opened: {exc!r}") from None
    channel.settimeout(timeout_s)
    return channel


@contextmanager
def open_sftp(host: Host, timeout_s: float) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session on the pooled connection, each read or write bounded by `timeout_s`.

    Holds one of the host's session slots; a stalled or broken transfer raises
    `SSHTransientError` and closes only this session, unless the connection itself died.
    """
    with _pool.session(host, time.monotonic() + timeout_s) as client:
        channel = _open_channel(host, client, timeout_s)
        try:
            channel.invoke_subsystem("sftp")
            with paramiko.SFTPClient(channel) as sftp:
                yield sftp
        except (TimeoutError, paramiko.SSHException, EOFError) as exc:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                _pool.discard(host, client)
            raise SSHTransientError(host.name, f"SFTP session failed: {exc!r}") from None
        finally:
            channel.close()


class _OutputOverflow(Exception):
    """Internal: standard output passed the command's bound."""


def _wrapped(command: str, timeout_s: float) -> str:
    """`command` as sent: print the session's process group first, run under a backstop.

    sshd runs each session in its own session and process group led by the login shell, so
    the id printed by `echo $$` lets a timed-out command be killed with all its children;
    `timeout` kills it anyway `BACKSTOP_S` later if nobody is left to.
    """
    backstop = f"{timeout_s + BACKSTOP_S:.0f}"
    return f"echo $$; exec timeout --signal=KILL {backstop} {command}"


def execute(
    host: Host,
    argv: list[str],
    timeout_s: float = 60.0,
    check: bool = True,
    secrets: Iterable[str] = (),
    stdin: bytes | None = None,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
) -> CommandResult:
    """Run `argv` on `host` and wait for it, within `timeout_s`; its stdout is kept whole.

    Raises `CommandFailedError` on a non-zero exit when `check`; `CommandTimeoutError` when
    the command outlives its timeout (it is then killed on the host); `OutputTooLargeError`
    when it prints more than `max_output_bytes` (it is killed too, nothing is truncated);
    and `SSHTransientError` when no session could be had, the session's sshd died (paramiko
    reports exit status -1) or the connection broke.
    """
    secrets = list(secrets)
    command = quote_command(argv)
    shown = _masked(command, secrets)
    started = time.monotonic()
    deadline = started + timeout_s
    with _pool.session(host, deadline) as client:
        channel = _open_channel(host, client, timeout_s)
        out = bytearray()
        err = bytearray()
        try:
            channel.exec_command(_wrapped(command, timeout_s))
            if stdin is not None:
                _send_input(channel, stdin)
            channel.shutdown_write()
            _drain(channel, deadline, out, err, max_output_bytes + 32)
            exit_status = channel.recv_exit_status()
        except (TimeoutError, _OutputOverflow) as exc:
            channel.close()
            stopped = _stop(host, client, out)
            if isinstance(exc, TimeoutError):
                raise CommandTimeoutError(
                    host.name, f"command timed out after {timeout_s:g}s; {stopped}", shown
                ) from None
            raise OutputTooLargeError(host.name, shown, max_output_bytes, stopped) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                _pool.discard(host, client)
            raise SSHTransientError(host.name, f"connection lost: {exc!r}", shown) from None
        finally:
            channel.close()
        if exit_status == -1:
            _pool.discard(host, client)
            raise SSHTransientError(host.name, "session ended without an exit status", shown)
    _, _, stdout = bytes(out).partition(b"\n")
    if len(stdout) > max_output_bytes:
        raise OutputTooLargeError(host.name, shown, max_output_bytes, "it had finished")
    result = CommandResult(
        host=host.name,
        command=shown,
        exit_status=exit_status,
        stdout=_masked(stdout.decode("utf-8", "replace"), secrets),
        stderr=_masked(bytes(err).decode("utf-8", "replace"), secrets)[-TAIL_CHARS:],
        duration_s=round(time.monotonic() - started, 4),
    )
    if check and not result.ok:
        raise CommandFailedError(host.name, shown, exit_status, result.stderr or result.stdout)
    return result


def _send_input(channel: paramiko.Channel, stdin: bytes) -> None:
    """Send `stdin` whole, unless the command ended before reading it all (it failed early,
    say): its output and exit status then say why, so that is no lost connection."""
    try:
        channel.sendall(stdin)
    except OSError:
        if not (channel.closed and channel.exit_status_ready()):
            raise


def _stop(host: Host, client: paramiko.SSHClient, out: bytearray) -> str:
    """Kill the process group whose id the command printed first; say what became of it."""
    first, newline, _ = bytes(out).partition(b"\n")
    if not newline or not first.isdigit():
        return "it had not started"
    group = int(first)
    try:
        channel = _open_channel(host, client, KILL_TIMEOUT_S)
        try:
            channel.exec_command(f"kill -KILL -- -{group} 2>/dev/null")
            channel.recv_exit_status()
        finally:
            channel.close()
    except (SSHTransientError, paramiko.SSHException, EOFError, OSError) as exc:
        _log.warning("%s: could not kill process group %s: %r", host.name, group, exc)
        return f"killing it on the host failed ({exc!r}); the host kills it {BACKSTOP_S:g}s later"
    return f"its processes on the host were killed (process group {group})"


def _drain(
    channel: paramiko.Channel,
    deadline: float,
    out: bytearray,
    err: bytearray,
    limit: int,
) -> None:
    """Read stdout (up to `limit` bytes) and stderr (its tail) to end-of-file, then wait for
    the exit status; never past `deadline`.

    Waits on one event that paramiko sets when either stream has data or ends, instead of
    polling: in a 50-thread fan-out, polling every 10 ms cost the client more CPU than the
    commands' output did. sshd may send the exit status before the command's last output;
    reading to end-of-file first keeps that output.
    """
    keep_err = 4 * TAIL_CHARS
    ready = threading.Event()
    # paramiko clears the event when a read empties its stream: so each wait below comes
    # after both streams were found empty, and data arriving after that sets it again.
    channel.in_buffer.set_event(ready)
    channel.in_stderr_buffer.set_event(ready)

    def take() -> bool:
        progressed = False
        if channel.recv_ready():
            out.extend(channel.recv(65536))
            progressed = True
        if channel.recv_stderr_ready():
            err.extend(channel.recv_stderr(65536))
            del err[:-keep_err]
            progressed = True
        if len(out) > limit:
            raise _OutputOverflow
        return progressed

    while True:
        progressed = take()
        if channel.eof_received or channel.closed:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not (progressed or ready.wait(remaining)):
            raise TimeoutError("command deadline passed")
    while take():
        pass
    if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("command deadline passed")


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
    # Debug, not info: a fan-out's table already has this line for every host, and 200
    # info lines cost the flow more than its task run (~0.2 s: the console and the API).
    logger.debug("%s: %s", host.name, result.detail)
    return result
