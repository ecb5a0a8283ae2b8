"""Real Prometheus and Alertmanager watching the lab, alerting opsflow through a webhook.

`monitoring_up` starts three processes of its own, each in its own session and listening on
127.0.0.1 only, with configs, logs and data under one directory:

- Prometheus scrapes every lab host's app (`ADDRESS:18080/metrics`, job `app`, target labels
  `host` and `service`) once a second and evaluates the alert rules once a second.
- A tiny exporter (`lab/exporter.py`, run by the system's `/usr/bin/python3 -I`, standard
  library only; job `lab-exporter`) reports what Prometheus cannot see from outside the hosts: the
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

The configs (scrape jobs, rules, routes) are `lab.monitoring_config`'s, and starting and
stopping processes is `lab.monitoring_processes`'; this module writes the configs, runs and
stops the three processes, and asks Prometheus and Alertmanager what they see.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsflow.lab.exporter import mnt_ns
from opsflow.lab.monitoring_config import (
    ALERTMANAGER,
    PROMETHEUS,
    SelfWatch,
    alert_rules,
    alertmanager_config,
    check_configs,
    page_self_alerts,
    prometheus_config,
    scrape_opsflow,
)
from opsflow.lab.monitoring_processes import (
    await_ready,
    fail,
    local_get,
    poll,
    port_free,
    reap,
    spawn,
    stop_processes,
)

if TYPE_CHECKING:
    from opsflow.lab.hosts.state import Lab

SYSTEM_PYTHON = "/usr/bin/python3"

STATE_FILE = "monitoring.json"
TOKEN_FILE = "webhook-token"  # noqa: S105 (a file name, not a secret)

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
    busy = [f"{name} 127.0.0.1:{port}" for name, port in ports.items() if not port_free(port)]
    if len(set(ports.values())) != len(ports) or busy:
        fail(f"monitoring ports clash or are in use: {', '.join(busy) or ports}")

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for sub in ("prometheus-data", "alertmanager-data"):
        (directory / sub).mkdir()
    token_file = directory / TOKEN_FILE if webhook_token else None
    if token_file is not None:
        _write_secret(token_file, webhook_token)
    hosts = [
        {
            "name": host.name,
            "sshd_pid": host.sshd_pid,
            "mnt_ns": mnt_ns(host.sshd_pid or 0),
        }
        for host in lab.hosts
    ]
    (directory / "exporter.json").write_text(json.dumps({"hosts": hosts}, indent=2) + "\n")
    _write_yaml(directory / "rules.yml", alert_rules(), "lab alert rules, written by opsflow")
    prometheus = prometheus_config(lab, alertmanager_port, exporter_port, directory / "rules.yml")
    alertmanager = alertmanager_config(webhook_url, token_file)
    if watch_opsflow is not None:
        scrape_opsflow(prometheus, watch_opsflow)
        page_self_alerts(alertmanager, watch_opsflow.pager_url)
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
            str(Path(__file__).resolve().with_name("exporter.py")),
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
    ready_paths = {
        "exporter": "/metrics",
        "alertmanager": "/-/ready",
        "prometheus": "/-/ready",
    }
    try:
        procs = {}
        for name, argv in argvs.items():
            procs[name] = spawn(argv, directory / f"{name}.log")
            state["pids"][name] = procs[name].pid
            (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        for name, proc in procs.items():
            await_ready(name, proc, urls[name] + ready_paths[name], directory / f"{name}.log")
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
    reap()
    if not directory.exists():
        return
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        state = {}
    except (OSError, ValueError) as exc:
        fail(f"cannot read the monitoring state {directory / STATE_FILE}: {exc}")
    strangers = [p.name for p in directory.iterdir() if p.name not in _OUR_FILES]
    if not state and strangers:
        fail(f"{directory} holds files monitoring did not make ({', '.join(strangers)})")
    stop_processes([int(pid) for pid in state.get("pids", {}).values()], directory)
    shutil.rmtree(directory)


# --- queries -------------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    status, body = local_get(url, timeout=5.0)
    if status != 200:
        fail(f"GET {url} answered {status}: {body[:300]!r}")
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
        poll("every target to be scraped", scraped, timeout_s, interval=0.2)
    except Exception as exc:
        fail(f"{exc}; targets: {', '.join(last) or 'none'}")


def query(monitoring: Monitoring, expr: str) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query."""
    url = monitoring.prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return _get_json(url)["data"]["result"]


def firing_alerts(monitoring: Monitoring) -> list[dict[str, Any]]:
    """Active (not silenced, not inhibited) alerts, as Alertmanager's API v2 lists them."""
    params = urllib.parse.urlencode({"active": "true", "silenced": "false", "inhibited": "false"})
    return _get_json(f"{monitoring.alertmanager_url}/api/v2/alerts?{params}")
