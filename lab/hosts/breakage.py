"""Breaking a lab host for real (app stopped, log disk full, app hung, app out of service), so
flows and tests meet real failures.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Literal

from opsflow.errors import LabError
from opsflow.lab.hosts.probes import poll, set_app_state
from opsflow.lab.hosts.run import SVC, nsenter
from opsflow.lab.hosts.state import (
    alive_in,
    app_admin_token_file,
    lab_dir,
    proc_state,
    running_record,
)

BreakKind = Literal["service", "disk", "hang", "drain"]


def _app_pid(sshd_pid: int, mnt_ns: int) -> int | None:
    """The PID of the host's running app from its pidfile, checked to be in its namespace."""
    try:
        text = Path(f"/proc/{sshd_pid}/root/var/lib/app/app.pid").read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not alive_in(int(text), mnt_ns):
        return None
    return int(text)


def _fill_log_disk(host: str, sshd_pid: int, target_percent: float = 98.0) -> str:
    """Fill the host's /var/log/app with old rotated logs until it is `target_percent` used."""
    # /proc/PID/root walks the path in the host's own mount namespace: its private tmpfs.
    log_dir = Path(f"/proc/{sshd_pid}/root/var/log/app")
    fs = os.statvfs(log_dir)
    used = 100 * (fs.f_blocks - fs.f_bfree) / fs.f_blocks
    if used >= 95:
        return f"{host}: /var/log/app is already {used:.0f}% full; nothing written"
    total = fs.f_blocks * fs.f_frsize
    to_write = fs.f_bavail * fs.f_frsize - int(total * (100 - target_percent) / 100)
    line = f"{host} app: GET /health 200 0.4ms worker=3 request_id=%08x\n"
    block = "".join(line % n for n in range(2048)).encode()
    files = 5
    now = time.time()
    written = 0
    for n in range(1, files + 1):
        path = log_dir / f"app.log.{n}"
        share = max(to_write - written, 0) // (files - n + 1)
        try:
            with open(path, "ab") as out:
                left = share
                while left > 0:
                    chunk = block[:left]
                    out.write(chunk)
                    left -= len(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise LabError(f"{host}: cannot fill /var/log/app: {exc.strerror}") from exc
        written += share
        old = now - (10 + n) * 86400  # rotated logs look 11-15 days old
        os.utime(path, (old, old))
    fs = os.statvfs(log_dir)
    used = 100 * (fs.f_blocks - fs.f_bfree) / fs.f_blocks
    if used < 95:
        raise LabError(f"{host}: filled /var/log/app only to {used:.0f}%")
    return (
        f"{host}: filled /var/log/app to {used:.0f}% with {files} old rotated logs "
        f"(app.log.1-{files}, {written / 2**20:.1f} MiB, mtime 11-15 days ago)"
    )


def break_host(host: str, kind: BreakKind, directory: Path | None = None) -> str:
    """Break a lab host for real and say what was done.

    Args:
        host: Lab host name, e.g. lab02.
        kind: `service` stops the app (svc stop); `disk` fills /var/log/app to at least 95%
            with old rotated logs; `hang` freezes the app with SIGSTOP, so its process lives
            but /health times out; `drain` takes the app out of service through its admin API,
            so it runs but /health answers 503 until something puts it back.
        directory: The lab's directory; default `get_settings().lab_dir`.
    """
    directory = lab_dir(directory)
    record = running_record(directory, host)
    sshd_pid, mnt_ns = record["sshd_pid"], record["mnt_ns"]
    if kind == "service":
        result = nsenter(host, sshd_pid, [SVC, "stop"], timeout=30)
        if result.returncode != 0:
            raise LabError(f"{host}: svc stop failed: {result.stderr.strip()}")
        return f"{host}: stopped the app service ({result.stdout.strip()})"
    if kind == "disk":
        return _fill_log_disk(host, sshd_pid)
    if kind == "hang":
        pid = _app_pid(sshd_pid, mnt_ns)
        if pid is None:
            raise LabError(f"{host}: the app is not running, so there is nothing to hang")
        if proc_state(pid) == "T":
            return f"{host}: the app (pid {pid}) is already frozen; nothing done"
        os.kill(pid, signal.SIGSTOP)
        # The signal is delivered when the process is next scheduled: wait until it is.
        poll(f"{host}'s app to stop", lambda: proc_state(pid) == "T", 5.0)
        return f"{host}: froze the app with SIGSTOP (pid {pid}); /health will time out"
    if kind == "drain":
        token = app_admin_token_file(directory).read_text().strip()
        reason = "drained by opsflow lab break"
        answer = set_app_state(record["address"], token, "out-of-service", reason)
        done = "took" if answer.get("changed") else "found"
        return f"{host}: {done} the app out of service; /health answers 503"
    raise LabError(f"unknown kind of breakage {kind!r} (service, disk, hang or drain)")
