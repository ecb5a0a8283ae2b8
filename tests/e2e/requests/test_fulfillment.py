"""Service requests end to end: the desk, a paused Prefect run, approval, and real lab hosts."""

from __future__ import annotations

import hashlib
import tarfile
import time
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from opsflow.lab.hosts.probes import app_health
from opsflow.lab.hosts.run import SVC, run_on_host
from tests.e2e.requests.conftest import Desk
from tests.support.waiting import wait_for


def run_state(flow_run_id: str) -> str:
    """The Prefect state type of a flow run (PAUSED, RUNNING, COMPLETED…)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run.state.type.value if run.state else "NONE"


def paused_request(request_desk: Desk, number: str) -> dict:
    """The request once it awaits approval and its run is really paused."""
    record = request_desk.wait_state(number, {"awaiting-approval"}, timeout_s=30)
    wait_for(lambda: run_state(record["approval_run_id"]) == "PAUSED", 15, f"{number} paused")
    return record


def actions(record: dict) -> list[tuple[str, str]]:
    return [(e["actor"], e["action"].removeprefix("service_request.")) for e in record["audit"]]


def test_approved_restart_really_restarts_and_the_requester_is_told(
    request_desk: Desk, lab, carol_pager
) -> None:
    from opsflow.flows.fulfillment.request_service_restart import request_service_restart

    host = lab.host("lab02")
    pid_before = app_health(host.address)["pid"]
    dry = request_service_restart("app", "lab02", dry_run=True)
    assert [c.state for c in dry.hosts] == ["planned"] and not dry.changed
    assert "status says running" in dry.summary
    assert app_health(host.address)["pid"] == pid_before, "a dry run restarted it"
    number = request_desk.submit(
        "carol", "request-service-restart-approved", service="app", host="lab02"
    )["number"]
    waiting = paused_request(request_desk, number)
    assert waiting["approval_policy"] == "one" and waiting["approval_due_at"]

    url = f"/requests/{number}/approve"
    wrong_role = request_desk.call("POST", url, "alice", json={"comment": "I'm on call"})
    assert wrong_role.status_code == 403
    assert f"alice may not approve {number}: the policy wants role approver" in wrong_role.text
    own = request_desk.call("POST", url, "carol", json={})
    assert own.status_code == 403
    assert f"carol cannot approve their own request {number}" in own.text
    assert run_state(waiting["approval_run_id"]) == "PAUSED"
    assert request_desk.show(number)["state"] == "awaiting-approval"
    assert app_health(host.address)["pid"] == pid_before

    started = time.monotonic()
    approved = request_desk.call("POST", url, "bob", json={"comment": "go ahead"})
    assert approved.status_code == 200, approved.text
    done = request_desk.wait_state(number, {"fulfilled", "failed"})
    approval_to_fulfilled = time.monotonic() - started
    assert done["state"] == "fulfilled", done["outcome"]
    assert (done["approver"], done["decision_comment"]) == ("bob", "go ahead")

    health = app_health(host.address)
    assert health is not None and health["pid"] != pid_before
    pidfile = run_on_host("lab02", ["cat", "/var/lib/app/app.pid"], lab.directory).stdout
    assert int(pidfile) == health["pid"]
    assert f"pid {health['pid']}" in done["outcome"]

    page = carol_pager.page_about(number)
    assert "fulfilled" in page["body"]["subject"]
    assert "restarted app on lab02" in page["body"]["body"]
    # The page goes out before the run notes that it went out: wait for the note.
    notified = ("request-fulfillment", "requester_notified")
    trail = wait_for(
        lambda: (
            notified in actions(request_desk.show(number)) and actions(request_desk.show(number))
        ),
        15,
        "the run to note that the requester was told",
    )
    assert trail[-1] == notified
    assert ("bob", "decision_sent") in trail
    assert ("bob", "approved") in trail
    approved_entry = next(e for e in done["audit"] if e["action"].endswith(".approved"))
    assert approved_entry["after"]["decision_comment"] == "go ahead"
    assert approved_entry["flow_run_id"] == waiting["approval_run_id"]
    assert len(done["flow_run_ids"]) == 2  # the request's run and the restart subflow
    wait_for(lambda: run_state(waiting["approval_run_id"]) == "COMPLETED", 15, "run completed")
    stamps = {e["action"].removeprefix("service_request."): e["at"] for e in done["audit"]}
    steps = ("decision_sent", "approved", "fulfilling", "fulfilled")
    print(
        f"\nMEASURED approval -> fulfilled (request-service-restart): {approval_to_fulfilled:.2f}s;"
    )
    print("  audit: " + ", ".join(f"{s} {stamps.get(s, '?')[11:23]}" for s in steps))


def test_diagnostic_bundle_arrives_with_the_hosts_checksum(
    request_desk: Desk, lab, carol_pager
) -> None:
    number = request_desk.submit("carol", "diagnostic-bundle", host="lab03")["number"]
    paused_request(request_desk, number)
    approved = request_desk.call(
        "POST", f"/requests/{number}/approve", "bob", json={"comment": "ok"}
    )
    assert approved.status_code == 200, approved.text
    done = request_desk.wait_state(number, {"fulfilled", "failed"})
    assert done["state"] == "fulfilled", done["outcome"]
    [attachment] = done["attachments"]
    assert attachment["host"] == "lab03"
    try:
        on_host = run_on_host("lab03", ["sha256sum", attachment["remote_path"]], lab.directory)
        assert on_host.stdout.split()[0] == attachment["sha256"]
    finally:
        run_on_host("lab03", ["rm", "-f", attachment["remote_path"]], lab.directory)
    data = open(attachment["path"], "rb").read()  # noqa: SIM115
    assert len(data) == attachment["size"]
    assert hashlib.sha256(data).hexdigest() == attachment["sha256"]
    with tarfile.open(attachment["path"]) as archive:
        names = set(archive.getnames())
        conf = archive.extractfile("etc/app/app.conf").read().decode()
    assert {"ps.txt", "df.txt", "uname.txt", "var/log/app/app.log"} <= names
    assert conf == run_on_host("lab03", ["cat", "/etc/app/app.conf"], lab.directory).stdout
    assert "NAME=lab03" in conf
    assert attachment["sha256"] in carol_pager.page_about(number)["body"]["body"]


def test_app_account_is_created_on_every_host_once(request_desk: Desk, lab, estate) -> None:
    from opsflow.flows.fulfillment.create_app_account import create_app_account

    username = "reports_svc"
    number = request_desk.submit("carol", "create-app-account", service="app", username=username)[
        "number"
    ]
    paused_request(request_desk, number)
    assert request_desk.call("POST", f"/requests/{number}/approve", "bob").status_code == 200
    try:
        done = request_desk.wait_state(number, {"fulfilled", "failed"})
        assert done["state"] == "fulfilled", done["outcome"]
        assert "created on 5 of 5 hosts" in done["outcome"]
        for host in lab.hosts:
            entry = run_on_host(host.name, ["getent", "passwd", username], lab.directory)
            assert entry.returncode == 0 and entry.stdout.strip().endswith(":/usr/sbin/nologin")
        again = create_app_account("app", username)
        assert not again.changed and all(not h.changed for h in again.hosts)
        assert "it existed everywhere" in again.summary
    finally:
        for host in lab.hosts:
            run_on_host(host.name, ["userdel", username], lab.directory)


def test_old_rotated_logs_are_cleared_and_nothing_else(request_desk: Desk, lab) -> None:
    from opsflow.flows.fulfillment.clear_old_logs import clear_old_logs

    files = {"app.log.1": "1 day ago", "app.log.2": "10 days ago", "app.log.3.gz": "20 days ago"}
    for host in lab.hosts:
        for name, age in files.items():
            path = f"/var/log/app/{name}"
            run_on_host(host.name, ["sh", "-c", f"echo old > {path}"], lab.directory)
            run_on_host(host.name, ["touch", "-d", age, path], lab.directory)
    dry = clear_old_logs("app", older_than_days=5, dry_run=True)
    assert dry.dry_run and not dry.changed and dry.hosts[0].state == "planned"
    assert "would delete 2" in dry.hosts[0].detail
    number = request_desk.submit("carol", "clear-old-logs", service="app", older_than_days=5)[
        "number"
    ]
    paused_request(request_desk, number)
    assert request_desk.call("POST", f"/requests/{number}/approve", "bob").status_code == 200
    done = request_desk.wait_state(number, {"fulfilled", "failed"})
    assert done["state"] == "fulfilled", done["outcome"]
    assert "on 5 of 5 hosts" in done["outcome"]
    for host in lab.hosts:
        left = run_on_host(host.name, ["ls", "/var/log/app"], lab.directory).stdout.split()
        assert {"app.log", "app.log.1"} <= set(left)
        assert not {"app.log.2", "app.log.3.gz"} & set(left)
        run_on_host(host.name, ["rm", "-f", "/var/log/app/app.log.1"], lab.directory)
    again = clear_old_logs("app", older_than_days=5)
    assert not again.changed


def test_a_request_left_unapproved_is_rejected_by_policy(request_desk: Desk, carol_pager) -> None:
    number = request_desk.submit("carol", "clear-logs-or-reject", service="app")["number"]
    waiting = paused_request(request_desk, number)
    done = request_desk.wait_state(number, {"rejected", "expired", "failed"}, timeout_s=40)
    assert done["state"] == "rejected"
    assert done["approver"] == "request-fulfillment"
    assert "no decision within 0.1 minutes" in done["decision_comment"]
    assert "rejected" in carol_pager.page_about(number)["body"]["subject"]
    wait_for(lambda: run_state(waiting["approval_run_id"]) == "COMPLETED", 15, "run completed")
    late = request_desk.call("POST", f"/requests/{number}/approve", "bob")
    assert late.status_code == 409 and "rejected: nothing to decide" in late.text


def test_escalation_pages_the_approvers_then_the_request_expires(
    request_desk: Desk, ops_pager, carol_pager
) -> None:
    number = request_desk.submit("carol", "clear-logs-or-escalate", service="app")["number"]
    paused_request(request_desk, number)
    page = ops_pager.page_about(f"{number} needs an approver", timeout_s=30)
    assert "opsflow request approve" in page["body"]["body"]
    escalated = request_desk.show(number)
    assert escalated["state"] == "awaiting-approval" and escalated["escalated_at"]
    done = request_desk.wait_state(number, {"expired", "rejected", "failed"}, timeout_s=40)
    assert done["state"] == "expired" and done["approver"] is None
    assert "expired" in carol_pager.page_about(number)["body"]["subject"]
    assert ("request-fulfillment", "escalated") in actions(request_desk.show(number))


def test_a_decision_typed_in_the_prefect_ui_does_not_count_by_default(request_desk: Desk) -> None:
    number = request_desk.submit("carol", "clear-old-logs", service="app")["number"]
    waiting = paused_request(request_desk, number)
    run_id = waiting["approval_run_id"]
    resume_flow_run(UUID(run_id), run_input={"decision": "approve", "approver": "bob"})
    wait_for(
        lambda: ("prefect-ui", "ui_decision_refused") in actions(request_desk.show(number)),
        15,
        "the UI decision refused",
    )
    wait_for(lambda: run_state(run_id) == "PAUSED", 15, "the run paused again")
    assert request_desk.show(number)["state"] == "awaiting-approval"
    rejected = request_desk.call(
        "POST", f"/requests/{number}/reject", "bob", json={"comment": "not now"}
    )
    assert rejected.status_code == 200
    assert rejected.json()["state"] == "rejected"
    assert rejected.json()["outcome"] == "rejected by bob"


def test_a_ui_decision_counts_when_the_estate_allows_it(request_desk: Desk, request_estate) -> None:
    settings = request_estate.directory / "estate.yaml"
    original = settings.read_text()
    settings.write_text(original + "ui_approvals: true\n")
    try:
        number = request_desk.submit("carol", "clear-old-logs", service="app")["number"]
        run_id = paused_request(request_desk, number)["approval_run_id"]
        resume_flow_run(UUID(run_id), run_input={"decision": "approve", "comment": "from UI"})
        done = request_desk.wait_state(number, {"fulfilled", "failed"})
    finally:
        settings.write_text(original)
    assert done["state"] == "fulfilled", done["outcome"]
    assert (done["approver"], done["decision_comment"]) == ("prefect-ui", "from UI")
    assert ("prefect-ui", "ui_decision_accepted") in actions(done)


def test_self_approval_is_refused_even_for_an_approver(request_desk: Desk) -> None:
    number = request_desk.submit("dave", "clear-old-logs", service="app")["number"]
    paused_request(request_desk, number)
    own = request_desk.call("POST", f"/requests/{number}/approve", "dave")
    assert own.status_code == 403 and "dave cannot approve their own request" in own.text
    assert request_desk.show(number)["state"] == "awaiting-approval"
    assert request_desk.call("POST", f"/requests/{number}/reject", "bob").status_code == 200
    done = request_desk.wait_state(number, {"rejected"})
    # dave has no notification block, nor has his team: the audit says nobody was told
    wait_for(
        lambda: (
            ("request-fulfillment", "notification_skipped") in actions(request_desk.show(number))
        ),
        15,
        "the skipped notification audited",
    )
    assert done["approver"] == "bob"


@pytest.mark.parametrize(
    ("item", "inputs", "field", "reason"),
    [
        (
            "request-service-restart",
            {"service": "nope", "host": "lab01"},
            "service",
            "no service 'nope'",
        ),
        ("create-app-account", {"service": "app", "username": "x;reboot"}, "username", "pattern"),
        ("create-app-account", {"service": "app", "username": "$(id)"}, "username", "pattern"),
        (
            "clear-old-logs",
            {"service": "app", "older_than_days": 4000},
            "older_than_days",
            "above the maximum 365",
        ),
        (
            "request-service-restart",
            {"service": "app", "host": "lab01", "force": "yes"},
            "force",
            "not an input",
        ),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(
    request_desk, item, inputs, field, reason
) -> None:
    before = request_desk.call("GET", "/requests", "alice", params={"limit": 1000}).json()
    answer = request_desk.call("POST", "/requests", "carol", json={"item": item, "inputs": inputs})
    assert answer.status_code == 422, answer.text
    [problem] = [p for p in answer.json()["detail"] if p["loc"] == ["body", "inputs", field]]
    assert reason in problem["msg"]
    assert request_desk.call("GET", "/requests", "alice", params={"limit": 1000}).json() == before


def test_who_may_ask_and_the_catalog_they_see(request_desk: Desk) -> None:
    catalog = {i["name"]: i for i in request_desk.call("GET", "/catalog", "carol").json()}
    restart = catalog["request-service-restart"]
    assert restart["may_request"] and restart["approval"].startswith("none")
    assert restart["inputs"][0]["choices"] == ["app"]
    assert restart["inputs"][1]["choices"] == ["lab01", "lab02", "lab03", "lab04", "lab05"]
    assert catalog["diagnostic-bundle"]["approval"].startswith("one approver: role approver")
    monitor = request_desk.call("GET", "/catalog", "alertmanager")
    assert monitor.status_code == 403, "a monitor only posts events"
    refused = request_desk.call(
        "POST",
        "/requests",
        "alertmanager",
        json={"item": "request-service-restart", "inputs": {"service": "app", "host": "lab01"}},
    )
    assert refused.status_code == 403 and "alertmanager lacks the role" in refused.text
    bob = {i["name"]: i for i in request_desk.call("GET", "/catalog", "bob").json()}
    assert bob["request-service-restart"]["may_request"]
    unknown = request_desk.call("POST", "/requests", "carol", json={"item": "pony", "inputs": {}})
    assert unknown.status_code == 422 and "no catalog item 'pony'" in unknown.text
    assert request_desk.call("GET", "/requests/REQ9999999", "carol").status_code == 404


def test_a_standard_request_from_the_prefect_ui_form(request_desk: Desk, lab, carol_pager) -> None:
    from opsflow.flows.request_fulfillment import fulfill_request, submit_request
    from opsflow.itsm.catalog import InvalidRequestError

    host = lab.host("lab04")
    pid_before = app_health(host.address)["pid"]
    assert submit_request(
        "request-service-restart", {"service": "app", "host": "lab04"}, "carol"
    ) == ("fulfilled")
    pid_after = app_health(host.address)["pid"]
    assert pid_after != pid_before
    [record] = request_desk.call("GET", "/requests", "alice", params={"limit": 1}).json()
    assert (record["item"], record["requester"], record["approver"]) == (
        "request-service-restart",
        "carol",
        "catalog",
    )
    assert "fulfilled" in carol_pager.page_about(record["number"])["body"]["subject"]
    assert fulfill_request(record["number"]) == "fulfilled"  # a second run changes nothing
    assert app_health(host.address)["pid"] == pid_after
    with pytest.raises(InvalidRequestError, match=r"inputs.host: no host 'lab09'"):
        submit_request("request-service-restart", {"service": "app", "host": "lab09"}, "carol")
    [latest] = request_desk.call("GET", "/requests", "alice", params={"limit": 1}).json()
    assert latest["number"] == record["number"]
    run_on_host("lab04", [SVC, "status"], lab.directory)
