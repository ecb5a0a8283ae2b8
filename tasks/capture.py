"""Run a command on a host and read all of its output, not just the tail an SSH result keeps.

The command's standard output goes to a fresh temporary file on the host, which is copied
here over SFTP (checksum verified) and removed, so a long package list or file manifest
arrives whole.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel

from inventory.models import Host
from opsflow.errors import CommandFailedError, PermanentError
from tasks.files import fetch_file
from tasks.ssh import execute

MAX_BYTES = 64 << 20

_CAPTURE_SCRIPT = """set -u
out=$(mktemp /var/tmp/opsflow-out.XXXXXXXXXX) || exit 125
echo "$out"
"$@" > "$out"
"""


class Captured(BaseModel):
    """A command's exit status, its whole standard output, and the end of its errors."""

    host: str
    exit_status: int
    stdout: str
    stderr: str


def run_captured(
    host: Host, argv: list[str], timeout_s: float = 300.0, check: bool = True
) -> Captured:
    """Run `argv` on the host with its output captured whole; CommandFailedError if `check`."""
    result = execute(host, ["sh", "-c", _CAPTURE_SCRIPT, "sh", *argv], timeout_s, check=False)
    lines = result.stdout.splitlines()
    if result.exit_status == 125 or not lines:
        raise PermanentError(f"{host.name}: no temporary file for output: {result.stderr.strip()}")
    remote = lines[0]
    try:
        with tempfile.TemporaryDirectory(prefix="opsflow-capture-") as scratch:
            local = Path(scratch) / "stdout"
            fetched = fetch_file(host, remote, local)
            if fetched.size > MAX_BYTES:
                raise PermanentError(f"{host.name}: output of {argv[0]} over {MAX_BYTES} bytes")
            stdout = local.read_text(errors="replace")
    finally:
        execute(host, ["rm", "-f", "--", remote], timeout_s=60, check=False)
    if check and result.exit_status != 0:
        raise CommandFailedError(host.name, result.command, result.exit_status, result.stderr)
    return Captured(
        host=host.name, exit_status=result.exit_status, stdout=stdout, stderr=result.stderr
    )
