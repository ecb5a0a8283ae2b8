"""Running commands inside a lab host's namespaces, bypassing SSH: how the lab sets hosts up
and breaks them, and how tests see a host's ground truth.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from opsflow.errors import LabError
from opsflow.lab.hosts.state import lab_dir, running_record

SVC = "/var/lib/app/bin/svc"
_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_env() -> dict[str, str]:
    # The caller's environment (a venv, PYTHON* variables) must not leak into lab hosts.
    return {"PATH": _PATH_ENV, "LANG": "C.UTF-8", "HOME": "/root"}


def nsenter(
    host: str, sshd_pid: int, argv: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nsenter", "--target", str(sshd_pid), "--mount", "--uts", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
            cwd="/",
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{host}: {shlex.join(argv)!r} ran past {timeout:g}s") from exc


def run_on_host(
    host: str, argv: list[str], directory: Path | None = None, *, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (no shell) inside a lab host's namespaces, as the lab sees the host.

    This bypasses SSH on purpose: the lab uses it to set hosts up and break them, and tests
    use it as ground truth. The result is returned whatever the exit status; a timeout or a
    host whose sshd is not running raises LabError.
    """
    record = running_record(lab_dir(directory), host)
    return nsenter(host, record["sshd_pid"], argv, timeout)
