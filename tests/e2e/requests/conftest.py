"""Request fulfillment on real parts: a copy of the lab's estate with a catalog, a real desk
served by uvicorn with the requests API, a real Prefect server, and pagers standing in for
people's notification channels.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from opsflow.inventory.models import token_sha256
from opsflow.itsm.store.records import open_records
from opsflow.lab.catalog import lab_catalog
from tests.support.serving import serve_app, two_workers_instead_of
from tests.support.waiting import wait_for

QUICK_TIMEOUT_MINUTES = 0.1
"""Six seconds: the approval window of the test-only items that are left to time out."""


def requests_catalog() -> list[dict[str, Any]]:
    """The lab's catalog plus items that need approval or time out quickly."""
    catalog = lab_catalog(approval_timeout_minutes=2)
    restart = next(i for i in catalog if i["name"] == "request-service-restart")
    bundle = next(i for i in catalog if i["name"] == "diagnostic-bundle")
    bundle["fulfillment"]["parameters"] = {"keep_remote": True}  # so the test can sha256sum it
    clear = next(i for i in catalog if i["name"] == "clear-old-logs")
    one = {"policy": "one", "approvers": {"roles": ["approver"]}, "timeout_minutes": 2}
    quick = {**one, "timeout_minutes": QUICK_TIMEOUT_MINUTES}
    return [
        *catalog,
        {**restart, "name": "request-service-restart-approved", "approval": one},
        {**clear, "name": "clear-logs-or-reject", "approval": {**quick, "on_timeout": "reject"}},
        {
            **clear,
            "name": "clear-logs-or-escalate",
            "approval": {**quick, "on_timeout": "escalate"},
        },
    ]


class Pager:
    """A PagerServer behind a custom-webhook block, with a way to find one page."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def page_about(self, text: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """The first page whose subject mentions `text`, waiting for it to arrive."""

        def found() -> dict[str, Any] | None:
            with self.server.lock:
                pages = list(self.server.pages)
            return next((p for p in pages if text in p["body"].get("subject", "")), None)

        return wait_for(found, timeout_s, f"a page about {text!r}")


def _pager(directory: Path, block: str) -> Iterator[Pager]:
    from opsflow.blocks.notifications import save_webhook_pager
    from opsflow.lab.pager import PagerServer

    server = PagerServer(("127.0.0.1", 0), directory / f"{block}.log")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    save_webhook_pager(block, server.url)
    yield Pager(server)
    server.shutdown()


@pytest.fixture(autouse=True)
def no_window_left_open() -> Iterator[None]:
    """Fail a test after which a maintenance window is still open: the run that declared it
    stopped inside its work and nobody closed it, so its hosts' alerts stay suppressed until
    it lapses (15 min for a rollout's host). The failure closes them, so that the session's
    later tests fail only for their own faults. Closed windows keep their short grace
    (`tasks.maintenance.DEFAULT_GRACE_S`) on purpose, and are left alone."""
    yield
    now = datetime.now(UTC)
    windows = open_records().maintenance
    left = [w for w in windows.between(now, now) if w.closed_at is None]
    for window in left:
        windows.close(window.id, now, now)
    assert not left, "maintenance windows left open: " + ", ".join(
        f"{w.label} over {', '.join(w.hosts)} (run {w.flow_run_id})" for w in left
    )


@pytest.fixture(scope="package")
def carol_pager(tmp_path_factory: pytest.TempPathFactory, prefect_server: None):
    """Where carol's notifications arrive (her own notification block)."""
    yield from _pager(tmp_path_factory.mktemp("pager"), "requests-carol")


@pytest.fixture(scope="package")
def ops_pager(tmp_path_factory: pytest.TempPathFactory, prefect_server: None):
    """Where the ops team's pages arrive, approvers' escalations included."""
    yield from _pager(tmp_path_factory.mktemp("pager"), "requests-ops")


@dataclass(frozen=True)
class RequestEstate:
    """The estate directory the package's tests use, and each person's desk token."""

    directory: Path
    tokens: dict[str, str]


@pytest.fixture(scope="package")
def request_estate(lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestEstate]:
    """A copy of the lab's estate with a catalog and notification blocks; OPSFLOW_INVENTORY
    points at it for this package's tests only."""
    directory = tmp_path_factory.mktemp("request-estate") / "estate"
    shutil.copytree(lab.estate_dir, directory)
    people_file = directory / "people.yaml"
    people = yaml.safe_load(people_file.read_text())
    tokens = {
        p["name"]: (lab.directory / "tokens" / p["name"]).read_text().strip()
        for p in people["people"]
    }
    tokens["dave"] = secrets.token_urlsafe(24)
    for person in people["people"]:
        if person["name"] == "carol":
            person["notify_block"] = "custom-webhook/requests-carol"
    people["people"].append(
        {
            "name": "dave",
            "full_name": "Dave Both",
            "team": "users",
            "roles": ["requester", "approver"],
            "token_sha256": token_sha256(tokens["dave"]),
        }
    )
    for team in people["teams"]:
        if team["name"] == "ops":
            team["notify_block"] = "custom-webhook/requests-ops"
        if team["name"] == "users":
            team.pop("notify_block", None)
    people_file.write_text(yaml.safe_dump(people, sort_keys=False))
    (directory / "catalog.yaml").write_text(
        yaml.safe_dump({"catalog": requests_catalog()}, sort_keys=False)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPSFLOW_INVENTORY", str(directory))
        yield RequestEstate(directory, tokens)


class Desk:
    """A running desk and a small HTTP client acting as one person or another."""

    def __init__(self, url: str, tokens: dict[str, str], session: Any = None) -> None:
        self.url = url
        self.tokens = tokens
        self.session = session
        """The session's `lab_desk`, whose in-process worker (`.worker`) carries requests."""

    def call(self, method: str, path: str, person: str, **kwargs: Any) -> requests.Response:
        """One call to /api/v1 as `person`."""
        headers = {"Authorization": f"Bearer {self.tokens[person]}"}
        return requests.request(
            method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs
        )

    def submit(self, person: str, item: str, **inputs: Any) -> dict[str, Any]:
        """Submit a request and return it, failing the test if the desk refuses."""
        answer = self.call("POST", "/requests", person, json={"item": item, "inputs": inputs})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def show(self, number: str, person: str = "alice") -> dict[str, Any]:
        """The request with its audit trail."""
        answer = self.call("GET", f"/requests/{number}", person)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_state(self, number: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
        """The request once it is in one of `states`."""
        return wait_for(
            lambda: (r := self.show(number)) and r["state"] in states and r,
            timeout_s,
            f"{number} to be {' or '.join(sorted(states))}",
        )


@pytest.fixture(scope="package")
def request_desk(
    lab_desk: Any, request_estate: RequestEstate, ssh_credentials, carol_pager, ops_pager
) -> Iterator[Desk]:
    """The desk with the requests API, served by uvicorn on a free port; the session's worker,
    in this process and on the same records, carries the requests (`.session.worker`)."""
    from opsflow.desk.app import create_app
    from opsflow.desk.estate import EstateCache
    from opsflow.itsm.store.records import open_records

    session = lab_desk
    app = create_app(open_records(), EstateCache(request_estate.directory))
    with serve_app(app) as url:
        yield Desk(url, request_estate.tokens, session)
    runs = session.worker.requests
    assert runs.wait_idle(60), f"{runs.running} request runs still going after the tests"


@pytest.fixture
def two_workers(
    request_desk: Desk, request_estate: RequestEstate, tmp_path: Path
) -> Iterator[list[subprocess.Popen]]:
    """Two worker processes on the same records and Prefect server, with 2 s leases, and no
    other worker while they run."""
    with two_workers_instead_of(request_desk.session, request_estate.directory, tmp_path) as two:
        yield two


def carrier(lease: str, workers: list[subprocess.Popen]) -> subprocess.Popen | None:
    """The worker process of `workers` holding the lease `lease` (e.g. release:7) now, if one
    does (a holder is `machine:pid:run`)."""
    holder = open_records().leases.holder(lease, datetime.now(UTC)) or ""
    pids = {process.pid: process for process in workers}
    return pids.get(int(holder.split(":")[1])) if holder.count(":") == 2 else None
