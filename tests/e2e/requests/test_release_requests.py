"""Releases through the desk on the real lab: an operator's own, the catalog's deploy-release
item approved by someone else, and `opsflow release` from the shell."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opsflow.cli.releases import release_app
from opsflow.lab.hosts.probes import app_version
from opsflow.lab.hosts.releases import INITIAL_RELEASE
from tests.e2e.requests.conftest import Desk
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("initial_release")]


def _release_done(request_desk: Desk, number: str, timeout_s: float = 120) -> dict:
    return wait_for(
        lambda: (
            (r := request_desk.call("GET", f"/releases/{number}", "alice").json())
            and r["state"] in ("deployed", "failed")
            and r
        ),
        timeout_s,
        f"{number} to end",
    )


def test_an_operator_releases_directly_and_others_are_refused(request_desk: Desk, lab) -> None:
    body = {"service": "app", "version": "1.1.0", "batch": "100%"}
    before = request_desk.call("GET", "/releases", "alice").json()
    refused = request_desk.call("POST", "/releases", "carol", json=body)
    assert refused.status_code == 403 and "lacks the role" in refused.text
    for field, bad in (("batch", "0"), ("version", "1.1.0;reboot"), ("service", "nope")):
        answer = request_desk.call("POST", "/releases", "alice", json={**body, field: bad})
        assert answer.status_code == 422, answer.text
        assert field in {d["loc"][-1] for d in answer.json()["detail"]}, answer.text
    assert request_desk.call("GET", "/releases", "alice").json() == before

    plan = request_desk.call(
        "POST", "/releases/plan", "alice", json={**body, "batch": "2", "canary": 1}
    )
    assert plan.status_code == 200, plan.text
    assert [len(b) for b in plan.json()["batches"]] == [1, 2, 2]
    assert request_desk.call("GET", "/releases", "alice").json() == before

    made = request_desk.call("POST", "/releases", "alice", json=body)
    assert made.status_code == 201, made.text
    number = made.json()["number"]
    assert (made.json()["requester"], made.json()["approver"]) == ("alice", "alice")
    done = _release_done(request_desk, number)
    assert done["state"] == "deployed", done
    assert {h["step"] for h in done["hosts"]} == {"deployed"}
    assert [e["action"] for e in done["audit"]][:3] == [
        "release.approved",
        "release.flow_run_linked",
        "release.hosts_planned",
    ]
    assert {app_version(h.address, timeout=2) for h in lab.hosts} == {"1.1.0"}
    assert request_desk.call("GET", f"/releases/{number}", "carol").status_code == 404
    assert number not in {
        r["number"] for r in request_desk.call("GET", "/releases", "carol").json()
    }


def test_a_release_asked_through_the_catalog_waits_for_its_approver(
    request_desk: Desk, lab, carol_pager
) -> None:
    request = request_desk.submit(
        "carol", "deploy-release", service="app", version="1.1.0", batch="50%", canary=1
    )
    request_desk.wait_state(request["number"], {"awaiting-approval"})
    releases = request_desk.call("GET", "/releases", "alice").json()
    assert all(r["request"] != request["number"] for r in releases)
    assert {app_version(h.address, timeout=2) for h in lab.hosts} == {INITIAL_RELEASE}
    approved = request_desk.call("POST", f"/requests/{request['number']}/approve", "bob")
    assert approved.status_code == 200, approved.text
    finished = request_desk.wait_state(request["number"], {"fulfilled", "failed"}, timeout_s=180)
    assert finished["state"] == "fulfilled", finished["outcome"]
    (release,) = [
        r
        for r in request_desk.call("GET", "/releases", "carol").json()
        if r["request"] == request["number"]
    ]
    assert (release["requester"], release["approver"], release["state"]) == (
        "carol",
        "bob",
        "deployed",
    )
    assert finished["outcome"].startswith(f"{release['number']} deployed: 1.1.0 on 5 hosts")
    assert {app_version(h.address, timeout=2) for h in lab.hosts} == {"1.1.0"}
    told = wait_for(
        lambda: any(
            release["number"] in p["body"].get("subject", "") for p in carol_pager.server.pages
        ),
        15,
        "carol to be told",
    )
    assert told


def test_release_commands_from_the_shell(request_desk: Desk, lab, monkeypatch) -> None:
    monkeypatch.setenv("OPSFLOW_DESK_URL", request_desk.url)
    monkeypatch.setenv("OPSFLOW_TOKEN", request_desk.tokens["alice"])
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()

    plan = runner.invoke(
        release_app,
        ["deploy", "app", "1.2.0-badhealth", "--batch", "2", "--canary", "1", "--dry-run"],
    )
    assert plan.exit_code == 0, plan.output
    assert "dry run: app 1.2.0-badhealth on 5 of 5 hosts: [lab01] then" in plan.output
    assert "would point current from 1.0.0 to 1.2.0-badhealth" in plan.output

    failed = runner.invoke(release_app, ["deploy", "app", "1.3.0-nostart", "--canary", "1"])
    assert failed.exit_code == 1, failed.output
    assert "lab01: rolled-back" in failed.output
    number = failed.output.split()[0]
    assert f"error: {number} failed: stopped: lab01:" in failed.output
    assert {app_version(h.address, timeout=2) for h in lab.hosts} == {INITIAL_RELEASE}

    shown = runner.invoke(release_app, ["show", number, "--json"])
    assert json.loads(shown.output)["rollback"].startswith("rollback complete")
    listed = runner.invoke(release_app, ["list", "--state", "failed"])
    assert f"{number}" in listed.output and "1.0.0 -> 1.3.0-nostart" in listed.output
