"""Move files between hosts and here over SFTP, checksummed on both ends."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path, PurePosixPath

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from opsflow.errors import PermanentError, SSHTransientError
from opsflow.inventory.models import Host
from opsflow.tasks.retry import RETRY_TRANSIENT
from opsflow.tasks.ssh import execute
from opsflow.tasks.ssh_connections import open_sftp

CHUNK = 1 << 20

SFTP_TIMEOUT_S = 60.0
"""Longest wait for any one SFTP reply: a stalled transfer fails instead of hanging."""


class FetchedFile(BaseModel):
    """A file copied from a host, with the checksum both ends agreed on."""

    host: str
    remote_path: str
    local_path: str
    size: int
    sha256: str


class ChecksumMismatchError(PermanentError):
    """The copy's checksum differs from the one the host computed: the copy is not trusted."""


def remote_sha256(host: Host, path: str) -> str:
    """The SHA-256 of a file, computed on the host."""
    result = execute(host, ["sha256sum", "--", path], timeout_s=300)
    return result.stdout.split()[0]


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=900,
    task_run_name="fetch_file[{host.name}:{remote_path}]",
)
def fetch_file(host: Host, remote_path: str, local_path: str | Path) -> FetchedFile:
    """Copy one regular file from the host and verify its SHA-256 against the host's own.

    Safe to retry: the copy is rewritten whole.
    """
    destination = Path(local_path)
    if not PurePosixPath(remote_path).is_absolute():
        raise PermanentError(f"{host.name}: remote path {remote_path!r} must be absolute")
    expected = remote_sha256(host, remote_path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with open_sftp(host, SFTP_TIMEOUT_S) as sftp:
            if not stat.S_ISREG(sftp.stat(remote_path).st_mode or 0):
                raise PermanentError(f"{host.name}: {remote_path} is not a regular file")
            with sftp.open(remote_path, "rb") as remote, destination.open("wb") as local:
                remote.prefetch()
                while chunk := remote.read(CHUNK):
                    digest.update(chunk)
                    local.write(chunk)
    except OSError as exc:
        raise SSHTransientError(host.name, f"SFTP copy of {remote_path} failed: {exc}") from None
    if digest.hexdigest() != expected:
        destination.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{host.name}: {remote_path}: copy has sha256 {digest.hexdigest()}, "
            f"host says {expected}"
        )
    return FetchedFile(
        host=host.name,
        remote_path=remote_path,
        local_path=str(destination),
        size=destination.stat().st_size,
        sha256=expected,
    )
