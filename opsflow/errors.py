"""One error tree for opsflow: transient errors are retried, permanent ones are not."""

from __future__ import annotations


class OpsError(Exception):
    """Root of every error opsflow raises on purpose."""


class TransientError(OpsError):
    """A failure that may pass if the same action is tried again (network, timeouts)."""


class PermanentError(OpsError):
    """A failure that will recur on retry (bad input, refused credentials, failed command)."""


class InventoryError(PermanentError, ValueError):
    """The estate's YAML is invalid; the message lists every problem with file, entry and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid inventory:\n" + "\n".join(f"  - {p}" for p in problems))


class LabError(PermanentError, RuntimeError):
    """The local lab cannot be brought up, inspected or torn down."""


class SSHError(OpsError):
    """Base for SSH failures; names the host and, where there is one, the command."""

    def __init__(self, host: str, cause: str, command: str | None = None):
        self.host = host
        self.command = command
        self.cause = cause
        where = f"{host}: {command!r}" if command else host
        super().__init__(f"{where}: {cause}")


class SSHTransientError(SSHError, TransientError):
    """The connection was refused, reset or timed out, or the session's sshd died."""


class SSHPermanentError(SSHError, PermanentError):
    """Authentication failed or the host key did not match the pinned one."""


class HostKeyMismatchError(SSHPermanentError):
    """The host presented a key other than the one pinned for it; no session was opened."""


class CommandFailedError(SSHPermanentError):
    """A remote command exited non-zero when success was required."""

    def __init__(self, host: str, command: str, exit_status: int, stderr: str):
        self.exit_status = exit_status
        self.stderr = stderr
        super().__init__(host, f"exit status {exit_status}: {stderr.strip()[-500:]}", command)


class CommandTimeoutError(SSHPermanentError):
    """A remote command ran past its timeout and was killed there; not retried: it may have
    done part of its work.
    """


class OutputTooLargeError(SSHPermanentError):
    """A command printed more than the bound its caller set; its output is never truncated."""

    def __init__(self, host: str, command: str, bound: int, what_happened: str):
        self.bound = bound
        super().__init__(
            host, f"standard output over its bound of {bound} bytes; {what_happened}", command
        )
