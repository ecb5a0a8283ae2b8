"""The lab's managed service: a tiny HTTP server each lab host runs as `app`.

It is copied into each release a host keeps (`/var/lib/app/releases/<version>/app-server`,
beside that release's `release.conf`) and run by the system's `/usr/bin/python3` (not the
project's venv), so it uses the standard library only. `svc` (lab/files/svc) starts and stops
the release `/var/lib/app/current` names. It answers `GET /health` with the host's name, its
PID and version, `GET /version` with the version, and `GET /metrics` in Prometheus text format
so Prometheus can scrape it. A release's `DEFECT` makes it a bad one on purpose: `badhealth`
serves but answers /health 503, `nostart` exits at start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def read_conf(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a shell-style config file, quotes stripped, comments skipped."""
    conf: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        conf[key.strip()] = value.strip().strip("'\"")
    return conf


class AppServer(ThreadingHTTPServer):
    """The HTTP server plus the little state its handlers report."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int, name: str, version: str, defect: str):
        super().__init__((address, port), AppHandler)
        self.name = name
        self.version = version
        self.defect = defect
        self.started = time.time()
        self.requests = 0
        self.lock = threading.Lock()


class AppHandler(BaseHTTPRequestHandler):
    """Serves /health, /version and /metrics; anything else is 404."""

    server: AppServer
    server_version = "opsflow-lab-app/1"

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
            requests = self.server.requests
        if self.path == "/health":
            answer = {"host": self.server.name, "pid": os.getpid(), "version": self.server.version}
            if self.server.defect == "badhealth":
                answer["error"] = "release defect: health check fails"
                self._send(503, "application/json", json.dumps(answer).encode())
            else:
                self._send(200, "application/json", json.dumps(answer).encode())
        elif self.path == "/version":
            body = json.dumps({"version": self.server.version}).encode()
            self._send(200, "application/json", body)
        elif self.path == "/metrics":
            lines = [
                "# HELP app_up Whether the app is serving requests.",
                "# TYPE app_up gauge",
                "app_up 1",
                "# HELP app_requests_total HTTP requests received since start.",
                "# TYPE app_requests_total counter",
                f"app_requests_total {requests}",
                "# HELP app_start_time_seconds Unix time the app started.",
                "# TYPE app_start_time_seconds gauge",
                f"app_start_time_seconds {self.server.started:.3f}",
                "# HELP app_info The host this app runs on and the version it runs.",
                "# TYPE app_info gauge",
                f'app_info{{host="{self.server.name}",version="{self.server.version}"}} 1',
            ]
            body = ("\n".join(lines) + "\n").encode()
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", body)
        else:
            self._send(404, "application/json", b'{"error": "not found"}')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: one log line per request would fill the host's small log disk."""


def _log(message: str) -> None:
    # The log disk may be full on purpose (break_host disk); the app keeps serving regardless.
    try:
        sys.stderr.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + message + "\n")
        sys.stderr.flush()
    except OSError:
        pass


def _write_pidfile(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then remove the pidfile and exit 0."""
    parser = argparse.ArgumentParser(prog="app-server", description=__doc__)
    parser.add_argument("--conf", type=Path, default=Path("/etc/app/app.conf"))
    parser.add_argument("--pidfile", type=Path, default=Path("/var/lib/app/app.pid"))
    parser.add_argument(
        "--release-conf", type=Path, default=Path(__file__).resolve().with_name("release.conf")
    )
    args = parser.parse_args(argv)

    conf = read_conf(args.conf)
    release = read_conf(args.release_conf)
    version, defect = release["VERSION"], release.get("DEFECT", "")
    if defect == "nostart":
        _log(f"app {version}: release defect: refusing to start")
        return 1
    server = AppServer(
        conf["ADDRESS"],
        int(conf["PORT"]),
        conf.get("NAME", os.uname().nodename),
        version,
        defect,
    )

    def stop(signum: int, _frame: object) -> None:
        _log(f"received signal {signum}, shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _write_pidfile(args.pidfile)
    _log(
        f"app {server.name} {version} listening on {conf['ADDRESS']}:{conf['PORT']} "
        f"pid {os.getpid()}"
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        try:
            if args.pidfile.read_text().strip() == str(os.getpid()):
                args.pidfile.unlink()
        except OSError:
            pass
        _log("app stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
