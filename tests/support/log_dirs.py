"""A lab host's log directory as the log tests use it: lab05's /var/log/app, a directory
`nobody` owns beside it, and a root-only file a planted link could aim at."""

from __future__ import annotations

from opsflow.lab.hosts.run import run_on_host

HOST = "lab05"
LOG_DIR = "/var/log/app"
TRAP_DIR = f"{LOG_DIR}/trap"
VICTIM = "/etc/opsflow-victim"
VICTIM_TEXT = "root's secret\n"
AS_NOBODY = "setpriv --reuid=nobody --regid=nogroup --clear-groups --"


def sh(script: str, *args: str) -> str:
    """What `script` prints on lab05 (through the lab, not SSH); fails the test if it fails."""
    result = run_on_host(HOST, ["sh", "-c", script, "sh", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


def listing() -> set[str]:
    """The files under lab05's log directory, relative to it."""
    return set(sh('cd "$1" && find . -type f | sed "s|^./||"', LOG_DIR).split())


def victim_state() -> str:
    """The root-only file's owner, mode, size and content."""
    return sh('stat -c "%U %a %s" "$1"; cat "$1"', VICTIM)
