"""`opsflow request` against the real desk: what a person types, what they read back."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opsflow.cli.service_requests import request_app
from tests.e2e.requests.conftest import Desk


@pytest.fixture
def as_person(request_desk: Desk, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI as one person of the estate against the test desk."""
    monkeypatch.setenv("OPSFLOW_DESK_URL", request_desk.url)
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at 80 columns otherwise

    def run(person: str, *args: str):
        monkeypatch.setenv("OPSFLOW_TOKEN", request_desk.tokens[person])
        return CliRunner().invoke(request_app, list(args))

    return run


def test_catalog_submit_show_and_reject_from_the_shell(as_person, request_desk: Desk) -> None:
    catalog = as_person("carol", "catalog", "--json")
    assert catalog.exit_code == 0, catalog.output
    assert "diagnostic-bundle" in {i["name"] for i in json.loads(catalog.output)}
    assert "request-service-restart" in as_person("carol", "catalog").output

    bad = as_person("carol", "submit", "create-app-account", "service=app", "username=a;b")
    assert bad.exit_code == 1 and "inputs.username" in bad.output and "pattern" in bad.output
    malformed = as_person("carol", "submit", "clear-old-logs", "service")
    assert malformed.exit_code == 2 and "expected NAME=VALUE" in malformed.output

    submitted = as_person("carol", "submit", "clear-old-logs", "service=app", "--json")
    assert submitted.exit_code == 0, submitted.output
    number = json.loads(submitted.output)["number"]
    request_desk.wait_state(number, {"awaiting-approval"})
    own = as_person("carol", "approve", number)
    assert own.exit_code == 1 and "cannot approve their own request" in own.output
    rejected = as_person("bob", "reject", number, "-m", "use the disk-full runbook")
    assert rejected.exit_code == 0, rejected.output
    assert f"{number}  clear-old-logs  rejected" in rejected.output
    shown = as_person("carol", "show", number)
    assert "decided by bob: use the disk-full runbook" in shown.output
    assert "service_request.rejected" in shown.output
    listed = as_person("bob", "list", "--state", "rejected", "--json")
    assert number in {r["number"] for r in json.loads(listed.output)}
