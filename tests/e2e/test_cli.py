"""The `opsflow` CLI against the real desk: the same records through one point of contact."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opsflow.cli.main import app
from opsflow.lab.people import token_file


@pytest.fixture
def opsflow(lab_desk, lab, monkeypatch):
    def run(person: str, *args: str, code: int = 0):
        monkeypatch.setenv("OPSFLOW_DESK_URL", lab_desk.url)
        monkeypatch.setenv("OPSFLOW_TOKEN", token_file(lab.directory, person).read_text())
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_open_list_show_resolve(opsflow) -> None:
    opened = json.loads(
        opsflow(
            "carol",
            "incident",
            "open",
            "--summary",
            "printer on fire",
            "--host",
            "lab01",
            "--symptom",
            "on-fire",
            "--impact",
            "3",
            "--urgency",
            "1",
            "--json",
        )
    )
    number = opened["number"]
    # A requester's impact and urgency are noted, not applied: classification's I2/U2 is P3.
    assert (opened["priority"], opened["impact"], opened["reported_by"]) == (3, 2, "carol")
    listed = json.loads(opsflow("alice", "incident", "list", "--state", "New", "--json"))
    assert number in [i["number"] for i in listed]
    refused = opsflow("carol", "incident", "resolve", number, "--notes", "x", code=1)
    assert "403" in refused
    resolved = json.loads(
        opsflow("alice", "incident", "resolve", number, "--notes", "extinguished", "--json")
    )
    assert resolved["state"] == "Resolved"
    shown = json.loads(opsflow("carol", "incident", "show", number, "--json"))
    assert shown["resolution_notes"] == "extinguished"
    assert "reporter's view: impact 3, urgency 1" in shown["worklog"][0]["text"]
    mine = json.loads(opsflow("carol", "me", "--json"))
    assert number in [i["number"] for i in mine["incidents"]]


def test_event_send_reaches_intake(opsflow) -> None:
    answer = json.loads(
        opsflow(
            "alertmanager",
            "event",
            "send",
            "--source",
            "cli-test",
            "--host",
            "lab01",
            "--severity",
            "info",
            "--summary",
            "hello",
            "--label",
            "team=ops",
            "--json",
        )
    )
    assert (answer["stored"], answer["duplicates"], answer["rejected"]) == (1, 0, [])
    bad = opsflow("alertmanager", "event", "send", "--label", "novalue", code=2)
    assert "NAME=VALUE" in bad


def test_errors_name_the_reason(opsflow) -> None:
    missing = opsflow("carol", "incident", "show", "INC9999999", code=1)
    assert "404" in missing
