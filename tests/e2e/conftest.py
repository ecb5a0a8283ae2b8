"""The whole loop on real parts: lab hosts, Prometheus, Alertmanager, the desk, Prefect."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="session")
def pager(tmp_path_factory: pytest.TempPathFactory, prefect_server: None):
    """A local HTTP receiver standing in for the on-call's pager, behind a notification block."""
    from blocks.notifications import save_webhook_pager
    from lab.pager import PagerServer

    server = PagerServer(("127.0.0.1", 0), tmp_path_factory.mktemp("pager") / "pages.log")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    save_webhook_pager("ops-pager", server.url)
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def generous_budget(lab) -> Iterator[None]:
    """The e2e tests remediate `app` several times an hour: raise the lab's budget for them."""
    path: Path = lab.estate_dir / "estate.yaml"
    original = path.read_text()
    path.write_text(yaml.safe_dump({**yaml.safe_load(original), "remediation_budget": 50}))
    yield
    path.write_text(original)


@pytest.fixture(scope="session")
def desk(lab, ssh_credentials, pager, generous_budget):
    """The desk served by uvicorn on a free port, with its triage and restoration dispatcher."""
    from desk.server import build_desk

    app, dispatcher = build_desk(lab.estate_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the desk to start")
    server.url = f"http://127.0.0.1:{port}"
    server.dispatcher = dispatcher
    yield server
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="session")
def monitoring(lab, desk):
    """Real Prometheus and Alertmanager watching the lab, posting to the desk with a token."""
    from lab.monitoring import monitoring_down, monitoring_up, wait_until_scraped
    from lab.people import token_file

    watch = monitoring_up(
        lab,
        webhook_url=f"{desk.url}/api/v1/events/alertmanager",
        webhook_token=token_file(lab.directory, "alertmanager").read_text(),
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
        exporter_port=free_port(),
    )
    wait_until_scraped(watch, timeout_s=60)
    yield watch
    monitoring_down(watch.directory)
