"""Real Prometheus and Alertmanager watching the lab, alerting opsflow through a webhook.

`monitoring_up` starts three processes of its own, each in its own session and listening on
127.0.0.1 only, with configs, logs and data under one directory:

- Prometheus scrapes every lab host's app (`ADDRESS:18080/metrics`, job `app`, target labels
  `host` and `service`) once a second and evaluates the alert rules once a second.
- A tiny exporter (this file, run by the system's `/usr/bin/python3 -I`, standard library
  only; job `lab-exporter`) reports what Prometheus cannot see from outside the hosts: the
  usage of each host's private `/var/log/app` tmpfs and the state of the app's process.
  It reads them through `/proc/SSHD_PID/root`, which resolves paths in the mount namespace
  of the host's sshd, so `statvfs` there sees the host's own tmpfs; the app's PID comes from
  the host's `/var/lib/app/app.pid` and is accepted only if it lives in that same namespace.
- Alertmanager groups alerts by alertname, host and service and posts them at once (webhook
  format version 4) to opsflow's webhook with a Bearer token read from a 0600 file, so the
  token is in neither config nor log.

Alerts (all `for: 0s`, labels `host`, `service`, `severity`, `symptom`; annotations
`summary`, `runbook`):

- ServiceDown (`service-down`, runbook `restart-service`): the scrape fails and the app's
  process is not alive (gone, a zombie, or no pidfile).
- ServiceHung (`service-hung`, runbook `recover-hung-service`): the scrape fails while the
  process is alive but stopped (SIGSTOP, state T), or alive and running yet unanswering for
  3 s. ServiceDown and ServiceHung are exclusive by construction: one needs the process
  dead, the other alive, and both facts come from the same exporter sample.
- LogFilesystemFull (`disk-full`, runbook `free-disk-space`): `/var/log/app` over 90 % used.

Given opsflow's own processes (`SelfWatch`), Prometheus also scrapes the desk (job
`opsflow-desk`) and the workers (`opsflow-worker`) and evaluates the rules opsflow ships on
itself (`opsflow/monitoring/opsflow-rules.yml`); Alertmanager sends those alerts (label
`source="opsflow-self"`) to the on-call's pager, by a route placed before opsflow's receiver:
an opsflow that falls behind is never told so through its own intake.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

    from opsflow.lab.hosts.state import Lab

# Only the standard library is imported at module level: the exporter runs this very file
# with the system's Python, outside the project's virtualenv.

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMTOOL = "/usr/bin/promtool"
AMTOOL = "/usr/bin/amtool"
SYSTEM_PYTHON = "/usr/bin/python3"

STATE_FILE = "monitoring.json"
TOKEN_FILE = "webhook-token"  # noqa: S105 (a file name, not a secret)
APP_JOB = "app"
EXPORTER_JOB = "lab-exporter"
DESK_JOB = "opsflow-desk"
WORKER_JOB = "opsflow-worker"
ON_CALL = "on-call"
OPSFLOW_SCRAPE_INTERVAL = "2s"
OPSFLOW_SCRAPE_TIMEOUT = "1500ms"
LOG_MOUNTPOINT = "/var/log/app"
APP_PIDFILE = "/var/lib/app/app.pid"
DISK_FULL_RATIO = 0.9
SCRAPE_TIMEOUT = "800ms"
EXPORTER_SCRAPE_INTERVAL = "500ms"
HUNG_RUNNING_WINDOW = "3s"

_OUR_FILES = {
    STATE_FILE,
    TOKEN_FILE,
    "exporter.json",
    "rules.yml",
    "prometheus.yml",
    "alertmanager.yml",
    "prometheus-data",
    "alertmanager-data",
    "exporter.log",
    "alertmanager.log",
    "prometheus.log",
}
"""Everything monitoring_up writes; monitoring_down deletes nothing else without a state file."""

# Processes this Python process started, kept so monitoring_down can reap them (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# Nothing here talks to anything but 127.0.0.1: never through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class SelfWatch:
    """opsflow's own processes for the lab's Prometheus to scrape (ADDRESS:PORT each), and
    the on-call's pager that opsflow's alerts on itself go to."""

    desk: tuple[str, ...]
    workers: tuple[str, ...]
    pager_url: str


@dataclass(frozen=True)
class Monitoring:
    """A running Prometheus, Alertmanager and lab exporter, and where they keep their files."""

    directory: Path
    prometheus_url: str
    alertmanager_url: str
    prometheus_pid: int
    alertmanager_pid: int
    exporter_url: str = ""
    exporter_pid: int = 0


def _fail(message: str) -> NoReturn:
    """Raise the lab's error type (imported late: the exporter runs without the project)."""
    from opsflow.errors import LabError

    raise LabError(message)


# --- the exporter (runs under /usr/bin/python3, standard library only) -----------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())


def _proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T, Z…), or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _mnt_ns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _host_samples(host: dict[str, Any]) -> list[tuple[str, str, float]]:
    """Samples (metric, labels, value) for one lab host, read inside its mount namespace."""
    name = host["name"]
    sshd_pid = host.get("sshd_pid")
    # The recorded namespace guards against a recycled PID: no namespace, nothing to see.
    visible = bool(sshd_pid) and host.get("mnt_ns") is not None
    visible = visible and _mnt_ns(sshd_pid) == host["mnt_ns"]
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
    if text.isdigit() and _mnt_ns(int(text)) == host["mnt_ns"]:
        state = _proc_state(int(text))
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


# --- configuration -------------------------------------------------------------------------


def alert_rules() -> dict[str, Any]:
    """The Prometheus rule file (as data): ServiceDown, ServiceHung and LogFilesystemFull."""
    app_up = f'up{{job="{APP_JOB}"}}'
    exporter = f'job="{EXPORTER_JOB}"'
    down = f"{app_up} == 0 unless on(host) lab_app_process_alive{{{exporter}}} == 1"
    hung = (
        f"({app_up} == 0 and on(host) lab_app_process_stopped{{{exporter}}} == 1)"
        f" or (max_over_time({app_up}[{HUNG_RUNNING_WINDOW}]) == 0"
        f" and on(host) min_over_time(lab_app_process_running{{{exporter}}}"
        f"[{HUNG_RUNNING_WINDOW}]) == 1)"
    )
    disk = (
        "max by (host, service, mountpoint) "
        f"(lab_filesystem_used_ratio{{{exporter}}}) > {DISK_FULL_RATIO}"
    )
    return {
        "groups": [
            {
                "name": "lab",
                "interval": "1s",
                "rules": [
                    {
                        "alert": "ServiceDown",
                        "expr": down,
                        "for": "0s",
                        "labels": {"severity": "critical", "symptom": "service-down"},
                        "annotations": {
                            "summary": "{{ $labels.service }} on {{ $labels.host }} is down: "
                            "{{ $labels.instance }} does not answer and its process is gone",
                            "runbook": "restart-service",
                        },
                    },
                    {
                        "alert": "ServiceHung",
                        "expr": hung,
                        "for": "0s",
                        "labels": {"severity": "critical", "symptom": "service-hung"},
                        "annotations": {
                            "summary": "{{ $labels.service }} on {{ $labels.host }} is hung: "
                            "its process is alive but {{ $labels.instance }} does not answer",
                            "runbook": "recover-hung-service",
                        },
                    },
                    {
                        "alert": "LogFilesystemFull",
                        "expr": disk,
                        "for": "0s",
                        "labels": {"severity": "critical", "symptom": "disk-full"},
                        "annotations": {
                            "summary": "{{ $labels.mountpoint }} on {{ $labels.host }} is "
                            "{{ $value | humanizePercentage }} full",
                            "runbook": "free-disk-space",
                        },
                    },
                ],
            }
        ]
    }


def _prometheus_config(
    lab: Lab, alertmanager_port: int, exporter_port: int, rules: Path
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": SCRAPE_TIMEOUT,
            "evaluation_interval": "1s",
        },
        "rule_files": [str(rules)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": APP_JOB,
                "static_configs": [
                    {
                        "targets": [f"{host.address}:{host.app_port}"],
                        "labels": {"host": host.name, "service": "app"},
                    }
                    for host in lab.hosts
                ],
            },
            {
                "job_name": EXPORTER_JOB,
                "scrape_interval": EXPORTER_SCRAPE_INTERVAL,
                "scrape_timeout": "400ms",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
            },
        ],
    }


def _alertmanager_config(webhook_url: str, token_file: Path | None) -> dict[str, Any]:
    webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
    if token_file is not None:
        webhook["http_config"] = {
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
        }
    return {
        "route": {
            "receiver": "opsflow",
            "group_by": ["alertname", "host", "service"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1m",
        },
        "receivers": [{"name": "opsflow", "webhook_configs": [webhook]}],
    }


def _watch_opsflow(prometheus: dict[str, Any], watch: SelfWatch) -> None:
    """Add opsflow's desk and workers as scrape jobs, and the rules opsflow ships on itself,
    to a Prometheus config."""
    from opsflow.monitoring import rules_path

    prometheus["rule_files"].append(str(rules_path()))
    for job, targets in ((DESK_JOB, watch.desk), (WORKER_JOB, watch.workers)):
        if targets:
            prometheus["scrape_configs"].append(
                {
                    "job_name": job,
                    "scrape_interval": OPSFLOW_SCRAPE_INTERVAL,
                    "scrape_timeout": OPSFLOW_SCRAPE_TIMEOUT,
                    "static_configs": [{"targets": list(targets)}],
                }
            )


def _page_self_alerts(alertmanager: dict[str, Any], pager_url: str) -> None:
    """Send opsflow's alerts on itself to the on-call's pager, by a route ahead of opsflow's
    receiver, so that they never come back into opsflow."""
    from opsflow.monitoring import SELF_SOURCE

    route = {
        "receiver": ON_CALL,
        "matchers": [f'source="{SELF_SOURCE}"'],
        "group_by": ["alertname"],
        "continue": False,
    }
    alertmanager["route"].setdefault("routes", []).insert(0, route)
    webhook = {"url": pager_url, "send_resolved": True}
    alertmanager["receivers"].append({"name": ON_CALL, "webhook_configs": [webhook]})


def _write_yaml(path: Path, data: dict[str, Any], header: str) -> None:
    import yaml

    path.write_text(f"# {header}\n" + yaml.safe_dump(data, sort_keys=False, width=1000))


def _write_secret(path: Path, secret: str) -> None:
    """Write `secret` to a fresh 0600 file."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret)


def _check(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        _fail(f"{what} is invalid:\n{(result.stdout + result.stderr).strip()}")


def check_configs(directory: Path) -> None:
    """Validate the generated configs with promtool and amtool; LabError on any problem."""
    _check([PROMTOOL, "check", "config", str(directory / "prometheus.yml")], "prometheus.yml")
    _check([PROMTOOL, "check", "rules", str(directory / "rules.yml")], "rules.yml")
    _check([AMTOOL, "check-config", str(directory / "alertmanager.yml")], "alertmanager.yml")


# --- processes -----------------------------------------------------------------------------


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET on one of our own local endpoints."""
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            _fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _await_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            _fail(f"{name} exited with status {proc.returncode}; {log} ends with:\n{_tail(log)}")
        try:
            return _get(url, timeout=1.0)[0] == 200
        except OSError:
            return False

    _poll(f"{name} at {url}", ready, timeout=20)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _is_ours(pid: int, directory: Path) -> bool:
    """Whether `pid` is still one of our processes (its command line names our directory)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(directory).encode() in cmdline and _proc_state(pid) not in (None, "Z")


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _stop(pids: list[int], directory: Path) -> None:
    """TERM our processes (and their process groups), then KILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        _reap()
        alive = [pid for pid in pids if _is_ours(pid, directory)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap()
            if not any(_is_ours(pid, directory) for pid in alive):
                break
            time.sleep(0.05)
    _reap()
    left = [pid for pid in pids if _is_ours(pid, directory)]
    if left:
        _fail(f"monitoring processes survived SIGKILL: {left}")


def monitoring_up(
    lab: Lab,
    webhook_url: str,
    webhook_token: str,
    prometheus_port: int = 19090,
    alertmanager_port: int = 19093,
    directory: Path | None = None,
    *,
    exporter_port: int | None = None,
    watch_opsflow: SelfWatch | None = None,
) -> Monitoring:
    """Start Prometheus, Alertmanager and the lab exporter for `lab`, alerting `webhook_url`.

    Whatever monitoring already runs in `directory` is stopped first. The exporter listens
    on `exporter_port`, by default `prometheus_port + 2`. With `watch_opsflow`, opsflow's
    processes are scraped too and its alerts on itself page the on-call. Returns once all
    three answer; call `wait_until_scraped` before breaking anything (the first scrape
    takes ~6 s).
    """
    directory = (directory or lab.directory / "monitoring").resolve()
    exporter_port = prometheus_port + 2 if exporter_port is None else exporter_port
    monitoring_down(directory)
    ports = {"prometheus": prometheus_port, "alertmanager": alertmanager_port}
    ports["exporter"] = exporter_port
    busy = [f"{name} 127.0.0.1:{port}" for name, port in ports.items() if not _port_free(port)]
    if len(set(ports.values())) != len(ports) or busy:
        _fail(f"monitoring ports clash or are in use: {', '.join(busy) or ports}")

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for sub in ("prometheus-data", "alertmanager-data"):
        (directory / sub).mkdir()
    token_file = directory / TOKEN_FILE if webhook_token else None
    if token_file is not None:
        _write_secret(token_file, webhook_token)
    hosts = [
        {"name": host.name, "sshd_pid": host.sshd_pid, "mnt_ns": _mnt_ns(host.sshd_pid or 0)}
        for host in lab.hosts
    ]
    (directory / "exporter.json").write_text(json.dumps({"hosts": hosts}, indent=2) + "\n")
    _write_yaml(directory / "rules.yml", alert_rules(), "lab alert rules, written by opsflow")
    prometheus = _prometheus_config(lab, alertmanager_port, exporter_port, directory / "rules.yml")
    alertmanager = _alertmanager_config(webhook_url, token_file)
    if watch_opsflow is not None:
        _watch_opsflow(prometheus, watch_opsflow)
        _page_self_alerts(alertmanager, watch_opsflow.pager_url)
    _write_yaml(
        directory / "prometheus.yml",
        prometheus,
        "Prometheus watching the opsflow lab, written by opsflow",
    )
    _write_yaml(
        directory / "alertmanager.yml",
        alertmanager,
        "Alertmanager for the opsflow lab, written by opsflow (token in a 0600 file)",
    )
    check_configs(directory)

    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    state: dict[str, Any] = {"directory": str(directory), "urls": urls, "pids": {}}
    argvs = {
        "exporter": [
            SYSTEM_PYTHON,
            "-I",
            str(Path(__file__).resolve()),
            "exporter",
            "--config",
            str(directory / "exporter.json"),
            "--listen",
            f"127.0.0.1:{exporter_port}",
        ],
        "alertmanager": [
            ALERTMANAGER,
            f"--config.file={directory / 'alertmanager.yml'}",
            f"--storage.path={directory / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            f"--web.external-url={urls['alertmanager']}",
            "--cluster.listen-address=",
        ],
        "prometheus": [
            PROMETHEUS,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            f"--web.external-url={urls['prometheus']}",
        ],
    }
    ready_paths = {"exporter": "/metrics", "alertmanager": "/-/ready", "prometheus": "/-/ready"}
    try:
        procs = {}
        for name, argv in argvs.items():
            procs[name] = _spawn(argv, directory / f"{name}.log")
            state["pids"][name] = procs[name].pid
            (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        for name, proc in procs.items():
            _await_ready(name, proc, urls[name] + ready_paths[name], directory / f"{name}.log")
    except BaseException:
        monitoring_down(directory)
        raise
    return _monitoring(state)


def _monitoring(state: dict[str, Any]) -> Monitoring:
    return Monitoring(
        directory=Path(state["directory"]),
        prometheus_url=state["urls"]["prometheus"],
        alertmanager_url=state["urls"]["alertmanager"],
        prometheus_pid=state["pids"]["prometheus"],
        alertmanager_pid=state["pids"]["alertmanager"],
        exporter_url=state["urls"]["exporter"],
        exporter_pid=state["pids"]["exporter"],
    )


def monitoring_state(directory: Path) -> Monitoring | None:
    """The monitoring recorded in `directory`, or None when none was started there."""
    try:
        state = json.loads((Path(directory) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if set(state.get("pids", {})) != {"exporter", "alertmanager", "prometheus"}:
        return None
    return _monitoring(state)


def monitoring_down(directory: Path) -> None:
    """Stop the monitoring in `directory` and remove the directory; idempotent."""
    directory = Path(directory).resolve()
    _reap()
    if not directory.exists():
        return
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        state = {}
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the monitoring state {directory / STATE_FILE}: {exc}")
    strangers = [p.name for p in directory.iterdir() if p.name not in _OUR_FILES]
    if not state and strangers:
        _fail(f"{directory} holds files monitoring did not make ({', '.join(strangers)})")
    _stop([int(pid) for pid in state.get("pids", {}).values()], directory)
    shutil.rmtree(directory)


# --- queries -------------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    status, body = _get(url, timeout=5.0)
    if status != 200:
        _fail(f"GET {url} answered {status}: {body[:300]!r}")
    return json.loads(body)


def wait_until_scraped(monitoring: Monitoring, timeout_s: float = 30) -> None:
    """Poll Prometheus until every target of every job has been scraped with up == 1."""
    url = monitoring.prometheus_url + "/api/v1/targets?state=active"
    last: list[str] = []

    def scraped() -> bool:
        nonlocal last
        try:
            targets = _get_json(url)["data"]["activeTargets"]
        except OSError:
            return False
        last = [
            f"{t['labels'].get('job')}/{t['labels'].get('instance')}: {t['health']}"
            for t in targets
        ]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    try:
        _poll("every target to be scraped", scraped, timeout_s, interval=0.2)
    except Exception as exc:
        _fail(f"{exc}; targets: {', '.join(last) or 'none'}")


def query(monitoring: Monitoring, expr: str) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query."""
    url = monitoring.prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return _get_json(url)["data"]["result"]


def firing_alerts(monitoring: Monitoring) -> list[dict[str, Any]]:
    """Active (not silenced, not inhibited) alerts, as Alertmanager's API v2 lists them."""
    params = urllib.parse.urlencode({"active": "true", "silenced": "false", "inhibited": "false"})
    return _get_json(f"{monitoring.alertmanager_url}/api/v2/alerts?{params}")


def main(argv: list[str] | None = None) -> int:
    """Entry point for the exporter process: `monitoring.py exporter --config F --listen A:P`."""
    parser = argparse.ArgumentParser(prog="lab-monitoring")
    commands = parser.add_subparsers(dest="command", required=True)
    exporter = commands.add_parser("exporter", help="serve the lab exporter")
    exporter.add_argument("--config", type=Path, required=True)
    exporter.add_argument("--listen", required=True)
    args = parser.parse_args(argv)
    return serve_exporter(args.config, args.listen)


if __name__ == "__main__":
    sys.exit(main())
