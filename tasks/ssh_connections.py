"""SSH connections pooled per process: one per host, a bounded number of sessions on each,
replaced only when dead, closed when idle by a reaper thread that ends with the last of them.

`tasks.ssh` runs commands on the sessions these connections give; `open_sftp` gives SFTP.
Host keys are pinned (the credentials block's client rejects unknown keys); paramiko's
failures become transient or permanent errors here, so retries decide on them correctly.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import paramiko

from opsflow.blocks.ssh import SshCredentials
from opsflow.errors import HostKeyMismatchError, SSHPermanentError, SSHTransientError
from opsflow.inventory.models import Host

MAX_SESSIONS_PER_HOST = 8
"""Sessions open at once on one host's connection, below sshd's default MaxSessions (10)."""

IDLE_CLOSE_S = 60.0
"""A pooled connection unused this long is closed (and its transport thread ends)."""

_log = logging.getLogger(__name__)


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


class ConnectionPool:
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
        # Prefect types load() as the block or its coroutine; from sync code it is the block.
        block = cast(SshCredentials, SshCredentials.load(name))
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


_pool = ConnectionPool()


def session(host: Host, deadline: float) -> contextlib.AbstractContextManager[paramiko.SSHClient]:
    """A live client for `host` from this process's pool, one of its session slots held
    until the block ends (see `ConnectionPool.session`)."""
    return _pool.session(host, deadline)


def discard(host: Host, client: paramiko.SSHClient) -> None:
    """Close a pooled client whose connection died (see `ConnectionPool.discard`)."""
    _pool.discard(host, client)


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


def open_channel(host: Host, client: paramiko.SSHClient, timeout_s: float) -> paramiko.Channel:
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
        channel = open_channel(host, client, timeout_s)
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
