"""What the lab's Prometheus and Alertmanager are told: scrape jobs, alert rules, routes.

The alerts (all `for: 0s`, labels `host`, `service`, `severity`, `symptom`; annotations
`summary`, `runbook`) are described in `lab.monitoring`, which writes these configs and runs
the daemons; `check_configs` has promtool and amtool validate what it wrote.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsflow.errors import LabError

if TYPE_CHECKING:
    from pathlib import Path

    from opsflow.lab.hosts.state import Lab

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PROMTOOL = "/usr/bin/promtool"
AMTOOL = "/usr/bin/amtool"

APP_JOB = "app"
EXPORTER_JOB = "lab-exporter"
DESK_JOB = "opsflow-desk"
WORKER_JOB = "opsflow-worker"
ON_CALL = "on-call"
OPSFLOW_SCRAPE_INTERVAL = "2s"
OPSFLOW_SCRAPE_TIMEOUT = "1500ms"
DISK_FULL_RATIO = 0.9
SCRAPE_TIMEOUT = "800ms"
EXPORTER_SCRAPE_INTERVAL = "500ms"
HUNG_RUNNING_WINDOW = "3s"


@dataclass(frozen=True)
class SelfWatch:
    """opsflow's own processes for the lab's Prometheus to scrape (ADDRESS:PORT each), and
    the on-call's pager that opsflow's alerts on itself go to."""

    desk: tuple[str, ...]
    workers: tuple[str, ...]
    pager_url: str


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


def prometheus_config(
    lab: Lab, alertmanager_port: int, exporter_port: int, rules: Path
) -> dict[str, Any]:
    """Prometheus's config: every lab host's app once a second, and the exporter."""
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


def alertmanager_config(webhook_url: str, token_file: Path | None) -> dict[str, Any]:
    """Alertmanager's config: every alert to opsflow's webhook, with the token in a file."""
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


def scrape_opsflow(prometheus: dict[str, Any], watch: SelfWatch) -> None:
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


def page_self_alerts(alertmanager: dict[str, Any], pager_url: str) -> None:
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


def _check(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise LabError(f"{what} is invalid:\n{(result.stdout + result.stderr).strip()}")


def check_configs(directory: Path) -> None:
    """Validate the generated configs with promtool and amtool; LabError on any problem."""
    _check([PROMTOOL, "check", "config", str(directory / "prometheus.yml")], "prometheus.yml")
    _check([PROMTOOL, "check", "rules", str(directory / "rules.yml")], "rules.yml")
    _check([AMTOOL, "check-config", str(directory / "alertmanager.yml")], "alertmanager.yml")
