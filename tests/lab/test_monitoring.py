"""Real Prometheus and Alertmanager watching a real 2-host lab, alerting a local webhook."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.down import lab_down
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.lab.hosts.state import Lab
from opsflow.lab.hosts.up import lab_up
from opsflow.lab.monitoring import (
    Monitoring,
    firing_alerts,
    monitoring_down,
    monitoring_up,
    query,
    wait_until_scraped,
)
from opsflow.lab.monitoring_config import check_configs
from tests.support.serving import free_ports
from tests.support.waiting import wait_for

BASE_ADDRESS = "127.0.40.1"
TOKEN = "lab-webhook-token-9f2c1e77d3"
ALERT_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Delivery:
    """One POST the webhook received."""

    at: float
    authorization: str | None
    body: dict[str, Any]


class WebhookReceiver:
    """A local HTTP server recording every POST body and its Authorization header."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with receiver.lock:
                    receiver.deliveries.append(
                        Delivery(time.monotonic(), self.headers.get("Authorization"), body)
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, since: float = 0.0) -> list[tuple[Delivery, dict[str, Any]]]:
        """Every (delivery, alert) received after `since` (time.monotonic())."""
        with self.lock:
            deliveries = [d for d in self.deliveries if d.at >= since]
        return [(d, alert) for d in deliveries for alert in d.body["alerts"]]

    def delivered(
        self, alertname: str, host: str, status: str, since: float, timeout: float = ALERT_TIMEOUT
    ) -> tuple[Delivery, dict[str, Any]]:
        """The first delivery after `since` holding a matching alert; fails after `timeout`."""

        def match() -> tuple[Delivery, dict[str, Any]] | None:
            for delivery, alert in self.alerts(since):
                labels = alert["labels"]
                if (labels["alertname"], labels.get("host"), alert["status"]) == (
                    alertname,
                    host,
                    status,
                ):
                    return delivery, alert
            return None

        found = wait_for(match, timeout, f"{status} {alertname} for {host}")
        assert found is not None
        return found


def ever_fired(monitoring: Monitoring, alertname: str, host: str) -> bool:
    """Whether Prometheus has ever had `alertname` pending or firing for `host`."""
    expr = f'count_over_time(ALERTS{{alertname="{alertname}",host="{host}"}}[1h])'
    return bool(query(monitoring, expr))


def settle(monitoring: Monitoring, host: str) -> None:
    """Wait until `host` is scraped as up and the rules have been evaluated after that."""
    wait_for(
        lambda: query(monitoring, f'up{{job="app",host="{host}"}} == 1'),
        ALERT_TIMEOUT,
        f"{host} to be scraped up",
    )
    seen_up = time.time()

    def evaluated() -> bool:
        with urlopen(monitoring.prometheus_url + "/api/v1/rules") as response:
            group = json.load(response)["data"]["groups"][0]
        return _rfc3339(group["lastEvaluation"]) > seen_up + 0.1

    wait_for(evaluated, 5.0, "a rule evaluation after the host was up")


def urlopen(url: str) -> Any:
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5)


def _rfc3339(text: str) -> float:
    from datetime import datetime

    # Python 3.11 parses "Z" and at most 6 fraction digits; Prometheus sends 9.
    main, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{main}.{(rest + '000000')[:6]}+00:00").timestamp()


def report(name: str, seconds: float) -> None:
    """Print a measured latency (visible with -s) for the report."""
    print(f"\n[measure] {name}: {seconds:.2f} s")


def broken_fires(
    monitoring: Monitoring, lab: Lab, webhook: WebhookReceiver, host: str, fault: str, alert: str
) -> tuple[float, Delivery, dict[str, Any]]:
    """Break `host` with `fault` once every target is scraped; when it broke, and the first
    firing delivery of `alert` for it (its latency reported)."""
    wait_until_scraped(monitoring)
    print(break_host(host, fault, lab.directory))
    broken = time.monotonic()
    delivery, fired = webhook.delivered(alert, host, "firing", since=broken)
    report(f"{fault} broken on {host} -> firing {alert} webhook", delivery.at - broken)
    return broken, delivery, fired


def repaired_resolves(
    lab: Lab, webhook: WebhookReceiver, host: str, repair: list[str], alert: str
) -> tuple[Delivery, dict[str, Any]]:
    """Repair `host` with the command `repair`; the first resolved delivery of `alert` for it
    after that (its latency reported)."""
    result = run_on_host(host, repair, lab.directory)
    assert result.returncode == 0, result.stderr
    repaired = time.monotonic()
    delivery, resolved = webhook.delivered(alert, host, "resolved", since=repaired)
    report(f"{' '.join(repair)} on {host} -> resolved {alert} webhook", delivery.at - repaired)
    return delivery, resolved


@pytest.fixture(scope="module")
def mon_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-host lab of its own, on addresses no other test lab uses."""
    directory = tmp_path_factory.mktemp("monitoring") / "lab"
    lab = lab_up(directory, hosts=2, base_address=BASE_ADDRESS)
    try:
        yield lab
    finally:
        lab_down(directory)


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    """The local webhook Alertmanager posts to."""
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def monitoring(mon_lab: Lab, webhook: WebhookReceiver) -> Iterator[Monitoring]:
    """Prometheus, Alertmanager and the lab exporter on free ports, scraped at least once."""
    prometheus_port, alertmanager_port, exporter_port = free_ports(3)
    started = time.monotonic()
    mon = monitoring_up(
        mon_lab,
        webhook.url,
        TOKEN,
        prometheus_port=prometheus_port,
        alertmanager_port=alertmanager_port,
        exporter_port=exporter_port,
    )
    report("monitoring_up until all three answer", time.monotonic() - started)
    try:
        yield mon
    finally:
        monitoring_down(mon.directory)


def test_every_lab_target_is_scraped(monitoring: Monitoring, mon_lab: Lab) -> None:
    started = time.monotonic()
    wait_until_scraped(monitoring, timeout_s=30)
    report("start to every target up", time.monotonic() - started)

    up = {r["metric"]["host"]: r["value"][1] for r in query(monitoring, 'up{job="app"}')}
    assert up == {"lab01": "1", "lab02": "1"}
    disk = query(monitoring, "lab_filesystem_used_ratio")
    assert {r["metric"]["host"] for r in disk} == {"lab01", "lab02"}
    assert all(r["metric"]["mountpoint"] == "/var/log/app" for r in disk)
    assert all(0 <= float(r["value"][1]) < 0.5 for r in disk)
    alive = query(monitoring, "lab_app_process_alive == 1 and lab_app_process_running == 1")
    assert {r["metric"]["host"] for r in alive} == {"lab01", "lab02"}
    assert firing_alerts(monitoring) == []


def test_configs_are_valid_and_hold_no_token(monitoring: Monitoring) -> None:
    check_configs(monitoring.directory)
    token_file = monitoring.directory / "webhook-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() == TOKEN
    alertmanager_yml = (monitoring.directory / "alertmanager.yml").read_text()
    assert f"credentials_file: {token_file}" in alertmanager_yml
    prometheus_yml = (monitoring.directory / "prometheus.yml").read_text()
    assert "scrape_interval: 1s" in prometheus_yml
    assert "evaluation_interval: 1s" in prometheus_yml


def test_service_down_fires_and_resolves(
    monitoring: Monitoring, mon_lab: Lab, webhook: WebhookReceiver
) -> None:
    _, delivery, alert = broken_fires(
        monitoring, mon_lab, webhook, "lab01", "service", "ServiceDown"
    )
    assert delivery.authorization == f"Bearer {TOKEN}"
    assert delivery.body["version"] == "4"
    assert delivery.body["status"] == "firing"
    assert delivery.body["groupLabels"] == {
        "alertname": "ServiceDown",
        "host": "lab01",
        "service": "app",
    }
    labels = alert["labels"]
    assert labels["host"] == "lab01"
    assert labels["service"] == "app"
    assert labels["symptom"] == "service-down"
    assert labels["severity"] == "critical"
    assert alert["annotations"]["runbook"] == "restart-service"
    assert "lab01" in alert["annotations"]["summary"]

    active = wait_for(
        lambda: [
            a
            for a in firing_alerts(monitoring)
            if a["labels"]["alertname"] == "ServiceDown" and a["labels"]["host"] == "lab01"
        ],
        5.0,
        "Alertmanager's API to list ServiceDown",
    )
    assert active[0]["status"]["state"] == "active"

    delivery, resolved = repaired_resolves(mon_lab, webhook, "lab01", [SVC, "start"], "ServiceDown")
    assert resolved["fingerprint"] == alert["fingerprint"]
    assert delivery.authorization == f"Bearer {TOKEN}"

    settle(monitoring, "lab01")
    assert not ever_fired(monitoring, "ServiceHung", "lab01")
    assert not [a for _, a in webhook.alerts() if a["labels"].get("host") == "lab02"]


def test_hang_fires_service_hung_not_service_down(
    monitoring: Monitoring, mon_lab: Lab, webhook: WebhookReceiver
) -> None:
    broken, delivery, alert = broken_fires(
        monitoring, mon_lab, webhook, "lab02", "hang", "ServiceHung"
    )
    assert alert["labels"]["symptom"] == "service-hung"
    assert alert["labels"]["service"] == "app"
    assert alert["annotations"]["runbook"] == "recover-hung-service"
    assert delivery.authorization == f"Bearer {TOKEN}"

    # Repaired the gentlest way: the process resumes, so nothing is ever "down".
    resume = ["sh", "-c", "kill -CONT $(cat /var/lib/app/app.pid)"]
    repaired_resolves(mon_lab, webhook, "lab02", resume, "ServiceHung")

    settle(monitoring, "lab02")
    assert not ever_fired(monitoring, "ServiceDown", "lab02")
    downs = [a for _, a in webhook.alerts(broken) if a["labels"]["alertname"] == "ServiceDown"]
    assert downs == []


def test_full_log_disk_alerts_for_that_host_only(
    monitoring: Monitoring, mon_lab: Lab, webhook: WebhookReceiver
) -> None:
    broken, _, alert = broken_fires(
        monitoring, mon_lab, webhook, "lab01", "disk", "LogFilesystemFull"
    )
    labels = alert["labels"]
    assert labels["symptom"] == "disk-full"
    assert labels["mountpoint"] == "/var/log/app"
    assert labels["service"] == "app"
    assert "instance" not in labels
    assert alert["annotations"]["runbook"] == "free-disk-space"

    remove_rotated = ["sh", "-c", "rm -f /var/log/app/app.log.*"]
    repaired_resolves(mon_lab, webhook, "lab01", remove_rotated, "LogFilesystemFull")

    assert not ever_fired(monitoring, "LogFilesystemFull", "lab02")
    # The app kept serving throughout: a full log disk is not a down or hung service.
    assert {a["labels"]["alertname"] for _, a in webhook.alerts(broken)} == {"LogFilesystemFull"}


def test_token_is_in_no_config_log_or_command_line(monitoring: Monitoring) -> None:
    token = TOKEN.encode()
    for path in monitoring.directory.rglob("*"):
        if path.is_file() and path.name != "webhook-token":
            assert token not in path.read_bytes(), path
    for pid in (monitoring.prometheus_pid, monitoring.alertmanager_pid, monitoring.exporter_pid):
        assert token not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert token not in Path(f"/proc/{pid}/environ").read_bytes()


def test_monitoring_down_from_another_process_leaves_nothing(monitoring: Monitoring) -> None:
    pids = [monitoring.prometheus_pid, monitoring.alertmanager_pid, monitoring.exporter_pid]
    code = "import sys; from pathlib import Path; from lab.monitoring import monitoring_down; "
    code += "monitoring_down(Path(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(monitoring.directory)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not monitoring.directory.exists()

    monitoring_down(monitoring.directory)  # idempotent, and reaps our children
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still exists"
    with pytest.raises(OSError):
        urlopen(monitoring.prometheus_url + "/-/ready")


# --- the rules alone, against synthetic series (promtool test rules) ------------------------

_APP = {"job": "app", "instance": "127.0.40.1:18080", "host": "lab01", "service": "app"}
_EXPORTER = {"job": "lab-exporter", "instance": "127.0.0.1:9", "host": "lab01", "service": "app"}


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def _process(alive: str, stopped: str, running: str) -> list[dict[str, str]]:
    return [
        _series("lab_app_process_alive", _EXPORTER, alive),
        _series("lab_app_process_stopped", _EXPORTER, stopped),
        _series("lab_app_process_running", _EXPORTER, running),
    ]


def _expect(alertname: str | None) -> list[dict[str, Any]]:
    if alertname is None:
        return []
    if alertname == "ServiceDown":
        symptom, runbook, what = "service-down", "restart-service", "down"
        detail = "127.0.40.1:18080 does not answer and its process is gone"
    else:
        symptom, runbook, what = "service-hung", "recover-hung-service", "hung"
        detail = "its process is alive but 127.0.40.1:18080 does not answer"
    return [
        {
            "exp_labels": {**_APP, "severity": "critical", "symptom": symptom},
            "exp_annotations": {"summary": f"app on lab01 is {what}: {detail}", "runbook": runbook},
        }
    ]


def _checks(timeline: dict[str, str | None]) -> list[dict[str, Any]]:
    """At each eval time, exactly the named alert (or none) of ServiceDown and ServiceHung."""
    return [
        {"eval_time": at, "alertname": name, "exp_alerts": _expect(name if name == want else None)}
        for at, want in timeline.items()
        for name in ("ServiceDown", "ServiceHung")
    ]


def test_rules_keep_down_and_hung_apart(tmp_path: Path) -> None:
    import yaml

    from opsflow.lab.monitoring_config import alert_rules

    (tmp_path / "rules.yml").write_text(yaml.safe_dump(alert_rules()))
    cases = {
        # Killed: the failed scrape lands before the exporter sees the process gone.
        "killed": (
            [_series("up", _APP, "1 1 1 0 0 0 0 0"), *_process("1x3 0x4", "0x7", "1x3 0x4")],
            {"2s": None, "3s": None, "4s": "ServiceDown", "7s": "ServiceDown"},
        ),
        # SIGSTOP: the exporter sees state T before the scrape times out.
        "hung": (
            [_series("up", _APP, "1 1 0 0 0 0"), *_process("1x5", "0 1 1 1 1 1", "1 0x4")],
            {"1s": None, "2s": "ServiceHung", "5s": "ServiceHung"},
        ),
        # SIGCONT: running again before the next scrape succeeds; nothing must fire as down.
        "resumed": (
            [_series("up", _APP, "0 0 0 0 1 1"), *_process("1x5", "1 1 0 0 0 0", "0 0 1 1 1 1")],
            {"1s": "ServiceHung", "2s": None, "3s": None, "4s": None, "5s": None},
        ),
        # Alive, not stopped, yet not answering for 3 s: hung too.
        "unresponsive": (
            [_series("up", _APP, "1 0 0 0 0 0 0"), *_process("1x6", "0x6", "1x6")],
            {"1s": None, "3s": None, "4s": "ServiceHung", "6s": "ServiceHung"},
        ),
        # No exporter data at all: a failing scrape still means down.
        "no exporter": (
            [_series("up", _APP, "1 0 0")],
            {"0s": None, "1s": "ServiceDown", "2s": "ServiceDown"},
        ),
    }
    disk = [
        _series(
            "lab_filesystem_used_ratio",
            {**_EXPORTER, "host": host, "mountpoint": "/var/log/app"},
            values,
        )
        for host, values in (("lab01", "0.5 0.95 0.95"), ("lab02", "0.5 0.5 0.5"))
    ]
    disk_alert = {
        "exp_labels": {
            "host": "lab01",
            "service": "app",
            "mountpoint": "/var/log/app",
            "severity": "critical",
            "symptom": "disk-full",
        },
        "exp_annotations": {
            "summary": "/var/log/app on lab01 is 95% full",
            "runbook": "free-disk-space",
        },
    }
    tests = [
        {"name": name, "interval": "1s", "input_series": series, "alert_rule_test": _checks(at)}
        for name, (series, at) in cases.items()
    ]
    tests.append(
        {
            "name": "disk",
            "interval": "1s",
            "input_series": disk,
            "alert_rule_test": [
                {"eval_time": "0s", "alertname": "LogFilesystemFull", "exp_alerts": []},
                {"eval_time": "2s", "alertname": "LogFilesystemFull", "exp_alerts": [disk_alert]},
            ],
        }
    )
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1s", "tests": tests})
    )
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
