"""Problems and known errors through the desk's API and the `opsflow` CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import typer
from typer.testing import CliRunner

from opsflow.cli.problems import known_error_app, problem_app
from tests.support.factories import NOW, TOKENS, auth, failure
from tests.support.serving import serve_app

KNOWN_ERROR = {
    "service": "app",
    "symptom": "service-down",
    "host": "web1",
    "root_cause": "stale pidfile after a crash",
    "workaround": "recover-hung-service",
}


@pytest.fixture
def recurring(store):
    ids = [failure(store, at=NOW + timedelta(hours=i)).id for i in range(3)]
    return store.problems.record_recurrence(
        "app", "service-down", ids, "problem-review", NOW
    ).problem


def test_problems_are_listed_and_shown_to_operators(desk_client, recurring) -> None:
    assert desk_client.get("/api/v1/problems").status_code == 401
    for path in ("/api/v1/problems", "/api/v1/problems/PRB0000001", "/api/v1/known-errors"):
        assert desk_client.get(path, headers=auth("rita")).status_code == 403, (
            "requesters: their own"
        )
    listed = desk_client.get("/api/v1/problems", headers=auth("olga")).json()
    assert [(p["number"], p["incident_ids"]) for p in listed] == [("PRB0000001", [1, 2, 3])]
    shown = desk_client.get("/api/v1/problems/PRB0000001", headers=auth("olga")).json()
    assert (shown["state"], shown["service"], shown["symptom"]) == ("New", "app", "service-down")
    assert (
        desk_client.get("/api/v1/problems", params={"state": "Closed"}, headers=auth("olga")).json()
        == []
    )
    assert desk_client.get("/api/v1/problems/PRB0000099", headers=auth("olga")).status_code == 404


def test_operators_move_problems_by_the_rules(desk_client, recurring) -> None:
    url = "/api/v1/problems/PRB0000001"
    assert (
        desk_client.patch(
            url, json={"state": "Root Cause Analysis"}, headers=auth("rita")
        ).status_code
        == 403
    )
    moved = desk_client.patch(url, json={"state": "Root Cause Analysis"}, headers=auth("olga"))
    assert moved.status_code == 200 and moved.json()["state"] == "Root Cause Analysis"
    refused = desk_client.patch(url, json={"state": "Known Error"}, headers=auth("olga"))
    assert refused.status_code == 409 and "root_cause" in refused.json()["detail"]


def test_operators_record_known_errors(desk_client, recurring, store) -> None:
    body = {**KNOWN_ERROR, "problem": "PRB0000001"}
    assert (
        desk_client.post("/api/v1/known-errors", json=body, headers=auth("rita")).status_code == 403
    )
    bad = desk_client.post(
        "/api/v1/known-errors", json={**body, "workaround": "rm-rf"}, headers=auth("olga")
    )
    assert bad.status_code == 422 and "rm-rf" in bad.json()["detail"]
    assert "restart-service" in bad.json()["detail"]
    created = desk_client.post("/api/v1/known-errors", json=body, headers=auth("olga"))
    assert created.status_code == 201
    ke = created.json()
    assert (ke["number"], ke["problem_id"], ke["times_applied"]) == ("KE0000001", 1, 0)
    again = desk_client.post("/api/v1/known-errors", json=body, headers=auth("olga"))
    assert again.status_code == 409 and "KE0000001" in again.json()["detail"]
    listed = desk_client.get("/api/v1/known-errors", headers=auth("olga")).json()
    assert [k["number"] for k in listed] == ["KE0000001"]
    problem = desk_client.get("/api/v1/problems/1", headers=auth("olga")).json()
    assert (problem["state"], problem["known_error_ids"]) == ("Known Error", [1])
    assert store.audit.trail("known_error", 1)[0].actor == "olga"


@pytest.fixture
def served_desk(desk_client, monkeypatch):
    """The same desk app served over HTTP, with the CLI pointed at it as olga."""
    with serve_app(desk_client.app) as url:
        monkeypatch.setenv("OPSFLOW_DESK_URL", url)
        monkeypatch.setenv("OPSFLOW_TOKEN", TOKENS["olga"])
        yield


def cli(*args: str):
    app = typer.Typer()
    app.add_typer(problem_app, name="problem")
    app.add_typer(known_error_app, name="known-error")
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_lists_shows_and_records(served_desk, recurring) -> None:
    listed = cli("problem", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [p["number"] for p in json.loads(listed.output)] == ["PRB0000001"]
    shown = cli("problem", "show", "PRB0000001")
    assert shown.exit_code == 0 and "INC0000001, INC0000002, INC0000003" in shown.output
    added = cli(
        "known-error", "add", "--service", "app", "--symptom", "service-down",
        "--host", "web1", "--label", "severity=critical", "--problem", "PRB0000001",
        "--root-cause", "stale pidfile", "--workaround", "recover-hung-service", "--json",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["labels"] == {"severity": "critical"}
    table = cli("known-error", "list")
    assert (
        table.exit_code == 0 and "KE0000001" in table.output and "recover-hung-ser" in table.output
    )
    refused = cli(
        "known-error", "add", "--service", "app", "--symptom", "x",
        "--root-cause", "y", "--workaround", "nope",
    )  # fmt: skip
    assert refused.exit_code == 1 and "nope" in refused.output
