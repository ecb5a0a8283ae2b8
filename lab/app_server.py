"""The lab's managed service: a tiny HTTP server each lab host runs as `app`.

It is copied into each release a host keeps (`/var/lib/app/releases/<version>/app-server`,
beside that release's `release.conf`) and run by the system's `/usr/bin/python3` (not the
project's venv), so it uses the standard library only. `svc` (lab/files/svc) starts and stops
the release `/var/lib/app/current` names. It answers `GET /health` with the host's name, its
PID and version, `GET /version` with the version, and `GET /metrics` in Prometheus text format
so Prometheus can scrape it. A release's `DEFECT` makes it a bad one on purpose: `badhealth`
serves but answers /health 503, `nostart` exits at start.

Its admin API, for the bearer token in the file app.conf's `ADMIN_TOKEN_FILE` names:
`GET /admin/state` says whether the app is in service; `PUT /admin/state` with
`{"state": "serving"}` or `{"state": "out-of-service", "reason": "…"}` puts it in or out
(idempotent). While out of service, /health answers 503, as an app drained from its load
balancer would.
"""

from __future__ import annotations

import argparse
import hmac
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

    def __init__(
        self, address: str, port: int, name: str, version: str, defect: str, admin_token: str
    ):
        super().__init__((address, port), AppHandler)
        self.name = name
        self.version = version
        self.defect = defect
        self.admin_token = admin_token
        self.state = "serving"
        self.reason = ""
        self.started = time.time()
        self.requests = 0
        self.lock = threading.Lock()


ADMIN_STATES = ("serving", "out-of-service")
MAX_ADMIN_BODY = 4096


class AppHandler(BaseHTTPRequestHandler):
    """Serves /health, /version, /metrics and /admin/state; anything else is 404."""

    server: AppServer
    server_version = "opsflow-lab-app/1"

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
            requests = self.server.requests
        if self.path == "/admin/state":
            if self._admin_allowed():
                self._send_state(changed=None)
        elif self.path == "/health":
            answer = {"host": self.server.name, "pid": os.getpid(), "version": self.server.version}
            if self.server.defect == "badhealth":
                answer["error"] = "release defect: health check fails"
                self._send(503, "application/json", json.dumps(answer).encode())
            elif self.server.state != "serving":
                answer["error"] = f"out of service: {self.server.reason or 'no reason given'}"
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

    def do_PUT(self) -> None:
        if self.path != "/admin/state":
            self._send(404, "application/json", b'{"error": "not found"}')
            return
        if not self._admin_allowed():
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= MAX_ADMIN_BODY:
            self._error(400, f"a JSON body of 1 to {MAX_ADMIN_BODY} bytes is needed")
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._error(400, "the body is not JSON")
            return
        state = body.get("state") if isinstance(body, dict) else None
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        if state not in ADMIN_STATES or not isinstance(reason, str) or len(reason) > 500:
            self._error(400, f"state: one of {', '.join(ADMIN_STATES)}; reason: text")
            return
        with self.server.lock:
            changed = self.server.state != state
            self.server.state = state
            self.server.reason = reason if state != "serving" else ""
        if changed:
            _log(f"admin: now {state}" + (f" ({reason})" if reason else ""))
        self._send_state(changed=changed)

    def _admin_allowed(self) -> bool:
        """Whether the request carries the admin token; answers 401 or 403 when it does not."""
        token = self.server.admin_token
        if not token:
            self._error(403, "no admin token is configured: the admin API is off")
            return False
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self._error(401, "a valid admin bearer token is needed")
            return False
        return True

    def _send_state(self, changed: bool | None) -> None:
        with self.server.lock:
            answer: dict[str, object] = {"state": self.server.state, "reason": self.server.reason}
        if changed is not None:
            answer["changed"] = changed
        self._send(200, "application/json", json.dumps(answer).encode())

    def _error(self, status: int, message: str) -> None:
        self._send(status, "application/json", json.dumps({"error": message}).encode())

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


def _admin_token(path: str | None) -> str:
    """The admin API's token; empty (the admin API off) when no readable file names one."""
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        _log(f"admin API off: cannot read {path}: {exc.strerror}")
        return ""


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
        _admin_token(conf.get("ADMIN_TOKEN_FILE")),
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
