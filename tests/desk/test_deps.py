"""Who reads what, with the lab's people and tokens against a real served desk.

alice is an operator, bob an approver, carol a requester, alertmanager a monitor. Another
person's record is answered 404 (as if it did not exist); a role that may not use an
endpoint at all is answered 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from opsflow.cli.main import app as opsflow
from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.itsm.records import IncidentCreate
from opsflow.itsm.store.records import Records
from opsflow.lab.people import token_file
from tests.support.factories import NoWorkers
from tests.support.serving import serve_app


@dataclass
class Desk:
    url: str
    lab_dir: Path
    records: dict[str, str]

    def token(self, person: str) -> str:
        return token_file(self.lab_dir, person).read_text().strip()

    def call(self, method: str, path: str, person: str, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token(person)}"}
        return requests.request(
            method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs
        )

    def ok(self, method: str, path: str, person: str, **kwargs: object) -> object:
        answer = self.call(method, path, person, **kwargs)
        assert answer.status_code < 300, f"{person} {method} {path}: {answer.text}"
        return answer.json()


@pytest.fixture(scope="module")
def people_desk(lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """A served desk over a fresh SQLite file holding incidents, requests and grants of
    several people; request and grant runs wait until the module ends."""
    store = Records(f"sqlite:///{tmp_path_factory.mktemp('authz') / 'records.db'}")
    app = create_app(store, EstateCache(lab.estate_dir))
    app.state.wake_ups = NoWorkers()
    with serve_app(app) as url:
        yield _with_records(Desk(url, lab.directory, {}), store, lab.hosts[0].name)


def _with_records(people_desk: Desk, store: Records, host: str) -> Desk:
    """`people_desk` once it holds an incident, a request and a grant of several people."""

    triaged, _ = store.correlation.open_or_correlate(
        IncidentCreate(
            host=host, service="app", symptom="service-down", summary="down", impact=2, urgency=1
        ),
        datetime.now(UTC),
        actor="triage",
    )
    store.worklog.add(triaged.id, "restoration", "root shell output", datetime.now(UTC))
    report = {
        "summary": "blank page",
        "service": "app",
        "symptom": "reported",
        "impact": 3,
        "urgency": 3,
    }
    people_desk.records["triage incident"] = triaged.number
    people_desk.records["carol incident"] = people_desk.ok(
        "POST", "/incidents", "carol", json=report
    )["number"]
    standard = {"item": "request-service-restart", "inputs": {"service": "app", "host": host}}
    approved = {"item": "clear-old-logs", "inputs": {"service": "app"}}
    people_desk.records["alice request"] = people_desk.ok(
        "POST", "/requests", "alice", json=standard
    )["number"]
    people_desk.records["carol request"] = people_desk.ok(
        "POST", "/requests", "carol", json=approved
    )["number"]
    for person, entitlement in (("carol", "web-login"), ("alice", "db-sudo")):
        grant = people_desk.ok(
            "POST", "/access-requests", person, json={"entitlement": entitlement}
        )
        people_desk.records[f"{person} grant"] = str(grant["id"])
    return people_desk


def numbers(listed: object) -> set[str]:
    return {str(r.get("number") or r["id"]) for r in listed}  # type: ignore[union-attr]


def test_requesters_read_only_their_own(people_desk: Desk) -> None:
    r = people_desk.records
    assert numbers(people_desk.ok("GET", "/incidents", "carol")) == {r["carol incident"]}
    assert people_desk.call("GET", f"/incidents/{r['carol incident']}", "carol").status_code == 200
    hidden = people_desk.call("GET", f"/incidents/{r['triage incident']}", "carol")
    missing = people_desk.call("GET", "/incidents/INC9999999", "carol")
    assert (hidden.status_code, missing.status_code) == (404, 404)

    assert numbers(people_desk.ok("GET", "/requests", "carol")) == {r["carol request"]}
    assert numbers(people_desk.ok("GET", "/requests?requester=alice", "carol")) == set()
    assert people_desk.call("GET", f"/requests/{r['alice request']}", "carol").status_code == 404
    assert (
        people_desk.call("POST", f"/requests/{r['alice request']}/reject", "carol").status_code
        == 404
    )

    assert numbers(people_desk.ok("GET", "/access-grants", "carol")) == {r["carol grant"]}
    assert people_desk.call("GET", f"/access-grants/{r['alice grant']}", "carol").status_code == 404
    assert (
        people_desk.call("DELETE", f"/access-grants/{r['alice grant']}", "carol").status_code == 404
    )
    refused = people_desk.call("POST", f"/access-requests/{r['alice grant']}/approve", "carol")
    assert refused.status_code == 404
    assert (
        people_desk.ok("GET", f"/access-grants/{r['alice grant']}", "alice")["state"] == "requested"
    )

    mine = people_desk.ok("GET", "/me", "carol")
    assert numbers(mine["incidents"]) == {r["carol incident"]}
    assert people_desk.call("GET", "/problems", "carol").status_code == 403
    assert people_desk.call("GET", "/known-errors", "carol").status_code == 403


def test_approvers_read_what_they_may_approve_and_their_own(people_desk: Desk) -> None:
    r = people_desk.records
    assert numbers(people_desk.ok("GET", "/incidents", "bob")) == set()
    assert people_desk.call("GET", f"/incidents/{r['triage incident']}", "bob").status_code == 404
    assert numbers(people_desk.ok("GET", "/requests", "bob")) == {r["carol request"]}
    assert people_desk.call("GET", f"/requests/{r['alice request']}", "bob").status_code == 404
    assert people_desk.ok("GET", f"/requests/{r['carol request']}", "bob")["requester"] == "carol"
    assert numbers(people_desk.ok("GET", "/access-grants", "bob")) == {
        r["carol grant"],
        r["alice grant"],
    }


def test_operators_read_everything(people_desk: Desk) -> None:
    r = people_desk.records
    assert {r["carol incident"], r["triage incident"]} <= numbers(
        people_desk.ok("GET", "/incidents", "alice")
    )
    worklog = people_desk.ok("GET", f"/incidents/{r['triage incident']}", "alice")["worklog"]
    assert [w["text"] for w in worklog] == ["root shell output"]
    assert numbers(people_desk.ok("GET", "/requests", "alice")) == {
        r["alice request"],
        r["carol request"],
    }
    assert numbers(people_desk.ok("GET", "/access-grants", "alice")) == {
        r["carol grant"],
        r["alice grant"],
    }
    assert people_desk.call("GET", "/problems", "alice").status_code == 200


def test_a_monitor_only_posts_events(people_desk: Desk) -> None:
    r = people_desk.records
    for method, path in [
        ("GET", "/incidents"),
        ("GET", f"/incidents/{r['triage incident']}"),
        ("GET", "/me"),
        ("GET", "/requests"),
        ("GET", f"/requests/{r['carol request']}"),
        ("GET", "/access-grants"),
        ("GET", f"/access-grants/{r['carol grant']}"),
        ("GET", "/catalog"),
        ("GET", "/services"),
        ("GET", "/problems"),
        ("GET", "/known-errors"),
    ]:
        answer = people_desk.call(method, path, "alertmanager")
        assert answer.status_code == 403, f"{method} {path}: {answer.status_code}"
    event = {"source": "test", "host": "lab01", "severity": "warning", "summary": "hi"}
    assert people_desk.call("POST", "/events", "alertmanager", json=event).status_code == 202


def test_the_cli_says_what_a_requester_may_not_read(people_desk: Desk, monkeypatch) -> None:
    monkeypatch.setenv("OPSFLOW_DESK_URL", people_desk.url)
    monkeypatch.setenv("OPSFLOW_TOKEN", people_desk.token("carol"))
    monkeypatch.setenv("COLUMNS", "200")
    number = people_desk.records["triage incident"]
    hidden = CliRunner().invoke(opsflow, ["incident", "show", number])
    assert hidden.exit_code == 1
    assert f"404: no incident {number}" in hidden.output
    listed = CliRunner().invoke(opsflow, ["incident", "list"])
    assert listed.exit_code == 0, listed.output
    assert people_desk.records["carol incident"] in listed.output and number not in listed.output
