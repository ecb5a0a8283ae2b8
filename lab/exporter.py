"""The lab exporter: what Prometheus cannot see from outside the lab hosts, on /metrics.

For each host, the usage of its private `/var/log/app` tmpfs and the state of the app's
process (job `lab-exporter`). It reads them through `/proc/SSHD_PID/root`, which resolves paths
in the mount namespace of the host's sshd, so `statvfs` there sees the host's own tmpfs; the
app's PID comes from the host's `/var/lib/app/app.pid` and is accepted only if it lives in that
same namespace. `lab.monitoring` runs this very file with the system's `/usr/bin/python3 -I`,
outside the project's virtualenv: it imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

LOG_MOUNTPOINT = "/var/log/app"
APP_PIDFILE = "/var/lib/app/app.pid"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T, Z…), or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def mnt_ns(pid: int) -> int | None:
    """The inode of the mount namespace process `pid` lives in, or None when there is none."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _host_samples(host: dict[str, Any]) -> list[tuple[str, str, float]]:
    """Samples (metric, labels, value) for one lab host, read inside its mount namespace."""
    name = host["name"]
    sshd_pid = host.get("sshd_pid")
    # The recorded namespace guards against a recycled PID: no namespace, nothing to see.
    visible = bool(
        sshd_pid and host.get("mnt_ns") is not None and mnt_ns(sshd_pid) == host["mnt_ns"]
    )
    samples = [("lab_host_visible", _labels(host=name), float(visible))]
    if not visible:
        return samples
    root = Path(f"/proc/{sshd_pid}/root")
    service = host.get("service", "app")

    try:
        fs = os.statvfs(root / LOG_MOUNTPOINT.lstrip("/"))
    except OSError:
        fs = None
    if fs is not None and fs.f_blocks:
        used = fs.f_blocks - fs.f_bfree
        usable = used + fs.f_bavail
        disk = _labels(host=name, mountpoint=LOG_MOUNTPOINT, service=service)
        samples += [
            ("lab_filesystem_used_ratio", disk, used / usable if usable else 1.0),
            ("lab_filesystem_size_bytes", disk, float(fs.f_blocks * fs.f_frsize)),
            ("lab_filesystem_avail_bytes", disk, float(fs.f_bavail * fs.f_frsize)),
        ]

    state = None
    try:
        text = (root / APP_PIDFILE.lstrip("/")).read_text().strip()
    except OSError:
        text = ""
    if text.isdigit() and mnt_ns(int(text)) == host["mnt_ns"]:
        state = proc_state(int(text))
    alive = state not in (None, "Z", "X", "x")
    stopped = state in ("T", "t")
    proc = _labels(host=name, service=service)
    samples += [
        ("lab_app_process_alive", proc, float(alive)),
        ("lab_app_process_stopped", proc, float(alive and stopped)),
        ("lab_app_process_running", proc, float(alive and not stopped)),
    ]
    return samples


_HELP = {
    "lab_host_visible": "Whether the exporter can see into the host's mount namespace.",
    "lab_filesystem_used_ratio": "Used share of the filesystem, as df counts it.",
    "lab_filesystem_size_bytes": "Size of the filesystem.",
    "lab_filesystem_avail_bytes": "Bytes of the filesystem available to unprivileged users.",
    "lab_app_process_alive": "Whether the pidfile names a live (non-zombie) app process.",
    "lab_app_process_stopped": "Whether the app process is alive but stopped (state T).",
    "lab_app_process_running": "Whether the app process is alive and not stopped.",
}


def render_metrics(hosts: list[dict[str, Any]]) -> str:
    """The exporter's /metrics page for `hosts` (name, sshd_pid, mnt_ns), freshly read."""
    by_metric: dict[str, list[str]] = {metric: [] for metric in _HELP}
    for host in hosts:
        for metric, labels, value in _host_samples(host):
            by_metric[metric].append(f"{metric}{{{labels}}} {value:g}")
    lines = []
    for metric, samples in by_metric.items():
        lines += [f"# HELP {metric} {_HELP[metric]}", f"# TYPE {metric} gauge", *samples]
    return "\n".join(lines) + "\n"


class _ExporterHandler(BaseHTTPRequestHandler):
    """Serves /metrics, re-reading every host on each request."""

    hosts: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            body = render_metrics(self.hosts).encode()
            status, content_type = 200, "text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, content_type = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: Prometheus scrapes twice a second."""


def serve_exporter(config: Path, listen: str) -> int:
    """Serve the lab exporter on `listen` (ADDRESS:PORT) until SIGTERM."""
    _ExporterHandler.hosts = json.loads(config.read_text())["hosts"]
    address, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((address, int(port)), _ExporterHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for the exporter process: `exporter.py exporter --config F --listen A:P`."""
    parser = argparse.ArgumentParser(prog="lab-monitoring")
    commands = parser.add_subparsers(dest="command", required=True)
    exporter = commands.add_parser("exporter", help="serve the lab exporter")
    exporter.add_argument("--config", type=Path, required=True)
    exporter.add_argument("--listen", required=True)
    args = parser.parse_args(argv)
    return serve_exporter(args.config, args.listen)


if __name__ == "__main__":
    sys.exit(main())
