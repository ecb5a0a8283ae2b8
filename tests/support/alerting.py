"""Real Prometheus and Alertmanager processes configured by a test itself, and the README's
configuration blocks to configure them with; and the lab's own pair (`lab/monitoring.py`)
pointed at a desk."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

from opsflow.lab.hosts.state import Lab
from opsflow.lab.monitoring import Monitoring, monitoring_up
from opsflow.lab.monitoring_config import ALERTMANAGER, AMTOOL, PROMETHEUS, PROMTOOL
from opsflow.lab.people import token_file
from tests.support import PROJECT
from tests.support.serving import free_port, free_ports
from tests.support.waiting import wait_for


def readme_yaml(first_line: str) -> str:
    """The README's fenced YAML block whose first line is `first_line`, as written there."""
    blocks = re.findall(r"```yaml\n(.*?)```", (PROJECT / "README.md").read_text(), re.S)
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"README.md has {len(found)} yaml blocks starting {first_line!r}"
    return found[0]


def check(argv: list[str]) -> None:
    """Run a checker (amtool, promtool); fail the test with its output if it refuses."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"


@dataclass
class Daemon:
    """A Prometheus or Alertmanager of the test's own, on a free loopback port."""

    url: str
    process: subprocess.Popen
    log: Path


@contextmanager
def _daemon(argv: list[str], port: int, directory: Path, name: str) -> Iterator[Daemon]:
    log = directory / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory
        )
    daemon = Daemon(f"http://127.0.0.1:{port}", process, log)

    def ready() -> bool:
        assert process.poll() is None, f"{name} exited:\n{log.read_text()[-2000:]}"
        try:
            # 401: it answers, and asks for the credentials a web config set
            return requests.get(f"{daemon.url}/-/ready", timeout=1).status_code in (200, 401)
        except requests.RequestException:
            return False

    try:
        wait_for(ready, 30, f"{name} to be ready")
        yield daemon
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def alertmanager(
    config: dict[str, Any], directory: Path, web_config: dict[str, Any] | None = None
) -> Iterator[Daemon]:
    """A real Alertmanager with `config`, checked by amtool first, gossip off; `web_config`
    (e.g. `basic_auth_users`) makes it ask for credentials."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    check([AMTOOL, "check-config", str(path)])
    port = free_port()
    argv = [
        ALERTMANAGER,
        f"--config.file={path}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    if web_config is not None:
        (directory / "web.yml").write_text(yaml.safe_dump(web_config))
        argv.append(f"--web.config.file={directory / 'web.yml'}")
    with _daemon(argv, port, directory, "alertmanager") as daemon:
        yield daemon


@contextmanager
def prometheus(config: dict[str, Any], rules: dict[str, Any], directory: Path) -> Iterator[Daemon]:
    """A real Prometheus with `config` and the rule file `rules`, both checked by promtool."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump({**config, "rule_files": ["rules.yml"]}, sort_keys=False))
    check([PROMTOOL, "check", "config", str(path)])
    port = free_port()
    argv = [
        PROMETHEUS,
        f"--config.file={path}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _daemon(argv, port, directory, "prometheus") as daemon:
        yield daemon


def amtool(daemon: Daemon, *args: str) -> Any:
    """What `amtool --alertmanager.url=… ARGS -o json` prints, parsed."""
    done = subprocess.run(
        [AMTOOL, f"--alertmanager.url={daemon.url}", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Receiver:
    """A webhook receiver standing in for a team's pager or chat: it keeps what it is sent."""

    url: str
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def got(self, **labels: str) -> list[dict[str, Any]]:
        """The alerts received so far whose labels include `labels`."""
        return [a for a in list(self.alerts) if labels.items() <= a["labels"].items()]


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A `Receiver` served on a free loopback port for the length of the block."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.extend(json.loads(body)["alerts"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/", received)
    finally:
        server.shutdown()
        server.server_close()


def watch_lab(lab: Lab, desk_url: str, **options: Any) -> Monitoring:
    """The lab's Prometheus, Alertmanager and exporter (`lab.monitoring`) on free ports,
    alerting the desk at `desk_url` with the lab's `alertmanager` token; `options` as
    `monitoring_up` takes them (`directory`, `watch_opsflow`)."""
    prometheus, alertmanager, exporter = free_ports(3)
    return monitoring_up(
        lab,
        webhook_url=f"{desk_url}/api/v1/events/alertmanager",
        webhook_token=token_file(lab.directory, "alertmanager").read_text(),
        prometheus_port=prometheus,
        alertmanager_port=alertmanager,
        exporter_port=exporter,
        **options,
    )
