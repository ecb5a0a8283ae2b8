"""Run commands on hosts over SSH: typed results, pinned host keys, bounded time, honest retries.

Connections are pooled per process (`tasks.ssh_connections`) and reused by every task of a
flow run. Each host's connection carries at most `MAX_SESSIONS_PER_HOST` sessions at once
(below sshd's default `MaxSessions` of 10); a failed command closes only its own channel, and
the connection is replaced only when it is dead. A command's standard output is kept whole,
up to a bound that fails loudly; a command that outlives its timeout is killed on the host.
Commands are argument vectors, quoted here and nowhere else, so a value can never become
shell syntax.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Iterable

import paramiko
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from opsflow.errors import (
    CommandFailedError,
    CommandTimeoutError,
    OutputTooLargeError,
    SSHTransientError,
)
from opsflow.inventory.models import Host
from opsflow.tasks import ssh_connections
from opsflow.tasks.retry import RETRY_TRANSIENT_LONGER

TAIL_CHARS = 4000
"""How much of stderr a result keeps: the end, where errors are."""

MAX_OUTPUT_BYTES = 1 << 20
"""Default bound on a command's standard output; more fails with `OutputTooLargeError`."""

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
    with ssh_connections.session(host, deadline) as client:
        channel = ssh_connections.open_channel(host, client, timeout_s)
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
                ssh_connections.discard(host, client)
            raise SSHTransientError(host.name, f"connection lost: {exc!r}", shown) from None
        finally:
            channel.close()
        if exit_status == -1:
            ssh_connections.discard(host, client)
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
        channel = ssh_connections.open_channel(host, client, KILL_TIMEOUT_S)
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
    **RETRY_TRANSIENT_LONGER,
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
