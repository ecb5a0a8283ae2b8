"""Access management end to end: the desk's API and CLI, the flows, real hosts, real keys.

Access is checked the way a user would: with their own key over SSH (paramiko, pinned host
keys), and `sudo -n true` once logged in. Ground truth about what changed on hosts comes from
the lab itself, not from SSH.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from opsflow.cli.access import access_app
from opsflow.lab.hosts.run import run_on_host
from tests.support.access_lab import Person, lab_state, ssh_as
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("access_env")

WEB = ["lab01", "lab03", "lab05"]
DB = ["lab02", "lab04"]
ALL = ["lab01", "lab02", "lab03", "lab04", "lab05"]


@pytest.fixture
def on_host(access_lab: Any) -> Any:
    """Ground truth: run a command inside one of the access lab's hosts, bypassing SSH."""

    def run(host: str, argv: list[str]) -> Any:
        return run_on_host(host, argv, access_lab.directory)

    return run


def call(desk: Any, person: Person, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method,
        f"{desk.url}/api/v1{path}",
        headers={"Authorization": f"Bearer {person.token}"},
        timeout=60,
        **kwargs,
    )


def ask(desk: Any, person: Person, entitlement: str, **fields: Any) -> dict[str, Any]:
    answer = call(
        desk, person, "POST", "/access-requests", json={"entitlement": entitlement, **fields}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def approve(desk: Any, approver: Person, grant_id: int) -> requests.Response:
    return call(desk, approver, "POST", f"/access-requests/{grant_id}/approve", json={})


def grant_when(desk: Any, person: Person, grant_id: int, check: Any, timeout_s: float) -> dict:
    def current() -> dict | None:
        grant = call(desk, person, "GET", f"/access-grants/{grant_id}").json()
        return grant if check(grant) else None

    return wait_for(current, timeout_s, f"access grant {grant_id} to satisfy {check}")


def granted(
    desk: Any, requester: Person, approver: Person, entitlement: str, minutes: float, wait_s: float
) -> dict:
    """The grant of `entitlement` the requester asked for and the approver approved, once the
    desk says it is active (within `wait_s`)."""
    grant = ask(desk, requester, entitlement, duration_minutes=minutes)
    assert approve(desk, approver, grant["id"]).status_code == 202
    return grant_when(desk, requester, grant["id"], lambda g: g["state"] == "active", wait_s)


def revoke(desk: Any, person: Person, grant_id: int) -> dict:
    answer = call(desk, person, "DELETE", f"/access-grants/{grant_id}")
    assert answer.status_code == 202, answer.text
    return grant_when(desk, person, grant_id, lambda g: g["state"] == "revoked", 60)


def logins(estate: Any, names: list[str], person: Person, command: str = "true") -> dict:
    """Each host's answer to `command` run as the person with their own key (None: refused)."""
    with ThreadPoolExecutor(len(names)) as pool:
        results = pool.map(
            lambda n: ssh_as(estate.host(n), person.name, person.key_file, command), names
        )
        return dict(zip(names, results, strict=True))


def usable(estate: Any, names: list[str], person: Person) -> None:
    """Wait until the person logs in with their own key on every host named."""
    wait_for(
        lambda: logins(estate, names, person) == dict.fromkeys(names, 0),
        60,
        f"{person.name} to log in on {', '.join(names)}",
    )


def test_login_grant_reaches_its_group_only_and_revoke_ends_it(
    on_host: Any, access_desk: Any, access_estate: Any, access_people: dict[str, Person]
) -> None:
    carol, bob = access_people["carol"], access_people["bob"]
    grant = ask(access_desk, carol, "web-login", duration_minutes=60, reason="deploy")
    assert grant["state"] == "requested"
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)
    answer = approve(access_desk, bob, grant["id"])
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "approved"
    usable(access_estate, WEB, carol)
    active = grant_when(access_desk, carol, grant["id"], lambda g: g["state"] == "active", 30)
    assert active["hosts"] == WEB and active["approver"] == "bob"
    assert logins(access_estate, ALL, carol) == {n: 0 if n in WEB else None for n in ALL}
    sudo = logins(access_estate, WEB, carol, "sudo -n true")
    assert all(status not in (0, None) for status in sudo.values()), sudo

    revoked = revoke(access_desk, carol, grant["id"])
    assert revoked["revoke_requested_by"] == "carol"
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)
    for name in WEB:
        assert on_host(name, ["getent", "passwd", "carol"]).returncode == 2


def test_a_grant_whose_worker_died_before_its_run_is_put_in_place(
    access_desk: Any, access_estate: Any, access_people: dict[str, Person]
) -> None:
    from opsflow.itsm.store.records import open_records

    carol = access_people["carol"]
    grant = ask(access_desk, carol, "web-login", duration_minutes=60, reason="on call")
    # What a worker leaves behind when it dies between leasing an approved grant and its
    # run: the grant approved, its lease held by a process that no longer renews it.
    open_records().access.decide(grant["id"], True, "bob", "ok", datetime.now(UTC))
    lapsed = datetime.now(UTC) - timedelta(minutes=1)
    assert open_records().leases.take(f"grant:{grant['id']}", "a-dead-worker", lapsed, lease_s=1)
    assert logins(access_estate, WEB, carol) == dict.fromkeys(WEB)

    active = grant_when(access_desk, carol, grant["id"], lambda g: g["state"] == "active", 30)
    assert active["hosts"] == WEB
    assert logins(access_estate, ALL, carol) == {n: 0 if n in WEB else None for n in ALL}
    trail = open_records().access.audit_trail(grant["id"])
    [taken] = [e for e in trail if e.action == "access_grant.taken_over"]
    assert taken.after["from"] == "a-dead-worker"
    assert taken.after["by"] == access_desk.worker.access.leases.holder
    revoke(access_desk, carol, grant["id"])
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)


def test_sudo_grant_gives_sudo_on_its_group_only(
    on_host: Any,
    access_lab: Any,
    access_desk: Any,
    access_estate: Any,
    access_people: dict[str, Person],
) -> None:
    from opsflow.flows.access_provisioning import grant_access

    alice, bob = access_people["alice"], access_people["bob"]
    grant = ask(access_desk, alice, "db-sudo", duration_minutes=30)
    before = lab_state(access_lab)
    plan = grant_access(grant["id"], dry_run=True)  # what an approver would set in motion
    assert {(c["host"], c["action"]) for c in plan} == {
        (h, a) for h in DB for a in ("ensure_account", "install_key", "install_sudo_rule")
    }
    assert all(c["state"] == "planned" and c["detail"].startswith("would") for c in plan)
    assert lab_state(access_lab) == before
    assert approve(access_desk, bob, grant["id"]).status_code == 202
    grant_when(access_desk, alice, grant["id"], lambda g: g["state"] == "active", 30)
    assert logins(access_estate, ALL, alice, "sudo -n true") == {
        n: 0 if n in DB else None for n in ALL
    }
    assert logins(access_estate, DB, alice, "sudo -n id -u") == dict.fromkeys(DB, 0)
    revoked = revoke(access_desk, bob, grant["id"])
    assert revoked["revoke_requested_by"] == "bob"
    assert logins(access_estate, ALL, alice) == dict.fromkeys(ALL)
    for name in DB:
        listing = on_host(name, ["ls", "/etc/sudoers.d"]).stdout.split()
        assert not [f for f in listing if f.startswith("opsflow-")]


def test_a_grant_reaches_five_hosts_and_granting_twice_changes_nothing(
    access_lab: Any,
    access_desk: Any,
    access_estate: Any,
    access_people: dict[str, Person],
) -> None:
    """Access on every host of the group, and a second run of the grant changes none."""
    from opsflow.flows.access_provisioning import grant_access

    carol, bob = access_people["carol"], access_people["bob"]
    grant = granted(access_desk, carol, bob, "lab-login", minutes=10, wait_s=60)
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL, 0)
    state = lab_state(access_lab)
    again = grant_access(grant["id"])
    assert [c["changed"] for c in again] == [False] * 10, again
    assert lab_state(access_lab) == state
    revoke(access_desk, carol, grant["id"])


def test_grant_expires_at_its_end(
    access_desk: Any, access_estate: Any, access_people: dict[str, Person]
) -> None:
    carol, bob = access_people["carol"], access_people["bob"]
    active = granted(access_desk, carol, bob, "web-login", minutes=0.1, wait_s=30)
    assert logins(access_estate, WEB, carol) == dict.fromkeys(WEB, 0)
    ends_at = datetime.fromisoformat(active["ends_at"])
    expired = grant_when(access_desk, carol, active["id"], lambda g: g["state"] == "expired", 60)
    assert datetime.fromisoformat(expired["ended_at"]) >= ends_at
    late = (datetime.fromisoformat(expired["ended_at"]) - ends_at).total_seconds()
    assert late < 60, f"revoked {late:.1f}s after its end"
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)


def test_expiry_reads_the_store_so_a_restart_loses_nothing(
    access_estate: Any, access_people: dict[str, Person]
) -> None:
    """No desk, no timer: a fresh expiry run finds the ended grant in the store."""
    from opsflow.flows.access_provisioning import expire_access, grant_access
    from opsflow.itsm.access import AccessRequestCreate, resolve_request
    from opsflow.itsm.store.records import open_records

    carol = access_people["carol"]
    grants = open_records().access
    body = AccessRequestCreate(entitlement="web-login", duration_minutes=0.05)
    person = access_estate.person("carol")
    grant = grants.request(resolve_request(access_estate, person, body), "carol", datetime.now(UTC))
    grants.decide(grant.id, True, "bob", "", datetime.now(UTC))
    grant_access(grant.id)
    active = grants.get(grant.id)
    assert active.state == "active" and logins(access_estate, WEB, carol) == dict.fromkeys(WEB, 0)
    if datetime.now(UTC) < active.ends_at:
        assert all(row["grant"] != grant.id for row in expire_access())
    wait_for(lambda: datetime.now(UTC) >= active.ends_at, 30, "the grant's end")
    expire_access()
    assert grants.get(grant.id).state == "expired"
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)


def test_refusals_are_clear_and_change_nothing(
    access_lab: Any, access_desk: Any, access_people: dict[str, Person]
) -> None:
    alice, bob, carol = access_people["alice"], access_people["bob"], access_people["carol"]
    before = lab_state(access_lab)

    own = ask(access_desk, bob, "db-sudo", duration_minutes=10, ssh_public_key=bob.public_key)
    answer = approve(access_desk, bob, own["id"])
    assert answer.status_code == 403
    assert "cannot approve their own request" in answer.json()["detail"]

    carols = ask(access_desk, carol, "web-login", duration_minutes=10)
    answer = approve(access_desk, alice, carols["id"])
    assert answer.status_code == 403
    assert "may not approve" in answer.json()["detail"]
    assert "role approver" in answer.json()["detail"]

    refused = [
        (carol, {"entitlement": "db-sudo"}, 403, "its requesters are team ops"),
        (carol, {"entitlement": "web-login", "duration_minutes": 481}, 422, "480 minutes"),
        (carol, {"entitlement": "db-sudo", "duration_minutes": 5}, 403, "may not request"),
        (alice, {"entitlement": "db-sudo", "duration_minutes": 121}, 422, "2 h = 120 minutes"),
        (carol, {"entitlement": "web-login", "username": "carol;id"}, 422, "username"),
        (carol, {"entitlement": "web-login", "username": "root"}, 422, "reserved"),
        (carol, {"entitlement": "web-login", "username": "bob"}, 422, "bob's name"),
        (
            carol,
            {"entitlement": "web-login", "ssh_public_key": f"{carol.public_key} $(reboot)"},
            422,
            "ssh_public_key",
        ),
        (
            carol,
            {"entitlement": "web-login", "ssh_public_key": f'command="sh" {carol.public_key}'},
            422,
            "ssh_public_key",
        ),
    ]
    for person, body, code, message in refused:
        answer = call(access_desk, person, "POST", "/access-requests", json=body)
        assert answer.status_code == code, (body, answer.text)
        assert message in answer.text, (body, answer.text)

    for grant in (own, carols):
        assert (
            call(access_desk, alice, "GET", f"/access-grants/{grant['id']}").json()["state"]
            == "requested"
        )
        rejected = call(access_desk, bob, "POST", f"/access-requests/{grant['id']}/reject", json={})
        if grant is own:
            assert rejected.status_code == 403, "nobody rejects their own request either"
            withdrawn = call(access_desk, bob, "DELETE", f"/access-grants/{grant['id']}")
            assert withdrawn.json()["state"] == "denied"
        else:
            assert rejected.json()["state"] == "denied"
    assert lab_state(access_lab) == before


def test_a_grant_failing_on_one_host_leaves_no_host_changed(
    on_host: Any, access_lab: Any, access_desk: Any, access_people: dict[str, Person]
) -> None:
    alice, bob = access_people["alice"], access_people["bob"]
    for name in DB:  # start from hosts opsflow never touched, so even its group must go
        on_host(name, ["groupdel", "opsflow-access"])
    before = lab_state(access_lab)
    # A real misconfiguration: lab04's sudoers.d is a file, so no rule can be put in it.
    on_host("lab04", ["sh", "-c", "mv /etc/sudoers.d /etc/sudoers.d.off && touch /etc/sudoers.d"])
    try:
        grant = ask(access_desk, alice, "db-sudo", duration_minutes=10)
        assert approve(access_desk, bob, grant["id"]).status_code == 202
        failed = grant_when(access_desk, alice, grant["id"], lambda g: g["last_error"], 60)
    finally:
        on_host("lab04", ["sh", "-c", "rm /etc/sudoers.d && mv /etc/sudoers.d.off /etc/sudoers.d"])
    assert failed["state"] == "approved"
    assert "rolled back on every host" in failed["last_error"]
    assert "lab04" in failed["last_error"] and "Not a directory" in failed["last_error"]
    assert lab_state(access_lab) == before
    assert revoke(access_desk, bob, grant["id"])["state"] == "revoked"
    assert lab_state(access_lab) == before


def test_review_reports_and_enforce_removes_what_no_grant_explains(
    on_host: Any,
    access_lab: Any,
    access_desk: Any,
    access_estate: Any,
    access_people: dict[str, Person],
) -> None:
    carol, bob = access_people["carol"], access_people["bob"]
    grant = granted(access_desk, carol, bob, "web-login", minutes=30, wait_s=30)
    # Added by hand, each marked the way opsflow marks what it manages.
    on_host("lab03", ["groupadd", "--force", "opsflow-access"])
    on_host("lab03", ["useradd", "--create-home", "--groups", "opsflow-access", "mallory"])
    on_host("lab02", ["sh", "-c", "echo 'mallory ALL=(ALL) ALL' > /etc/sudoers.d/opsflow-x"])
    stale = f"{access_people['alice'].public_key.rsplit(' ', 1)[0]} opsflow-grant-999"
    on_host("lab01", ["sh", "-c", f"echo '{stale}' >> /home/carol/.ssh/authorized_keys"])
    before = lab_state(access_lab)

    answer = call(access_desk, carol, "POST", "/access-reviews", json={})
    assert answer.status_code == 403, "reviews are for operators"
    rows = call(access_desk, access_people["alice"], "POST", "/access-reviews", json={}).json()
    unexplained = {(r["host"], r["kind"], r["name"]) for r in rows if r["explained_by"] is None}
    assert unexplained == {
        ("lab03", "account", "mallory"),
        ("lab02", "sudo_rule", "opsflow-x"),
        ("lab01", "key", "carol:opsflow-grant-999"),
    }
    explained = {
        (r["host"], r["kind"]) for r in rows if r["explained_by"] == f"opsflow-grant-{grant['id']}"
    }
    assert explained == {(h, k) for h in WEB for k in ("account", "key")}
    assert lab_state(access_lab) == before, "a review without --enforce changes nothing"

    result = CliRunner().invoke(
        access_app,
        ["review", "--enforce", "--json"],
        env={"OPSFLOW_DESK_URL": access_desk.url, "OPSFLOW_TOKEN": access_people["alice"].token},
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    removed = {(r["host"], r["name"]) for r in rows if r["action"] == "removed"}
    assert removed == {
        ("lab03", "mallory"),
        ("lab02", "opsflow-x"),
        ("lab01", "carol:opsflow-grant-999"),
    }
    assert on_host("lab03", ["getent", "passwd", "mallory"]).returncode == 2
    assert on_host("lab02", ["test", "-e", "/etc/sudoers.d/opsflow-x"]).returncode == 1
    assert (
        "opsflow-grant-999"
        not in on_host("lab01", ["cat", "/home/carol/.ssh/authorized_keys"]).stdout
    )
    assert logins(access_estate, WEB, carol) == dict.fromkeys(WEB, 0), "granted access is kept"
    revoke(access_desk, carol, grant["id"])


def test_cli_requests_approves_lists_and_revokes(
    access_desk: Any, access_estate: Any, access_people: dict[str, Person]
) -> None:
    def opsflow(person: Person, *args: str) -> Any:
        env = {"OPSFLOW_DESK_URL": access_desk.url, "OPSFLOW_TOKEN": person.token}
        result = CliRunner().invoke(access_app, [*args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    carol, bob = access_people["carol"], access_people["bob"]
    grant = opsflow(carol, "request", "web-login", "--minutes", "15", "--reason", "on call")
    assert grant["state"] == "requested" and grant["duration_minutes"] == 15
    refused = CliRunner().invoke(
        access_app,
        ["approve", str(grant["id"])],
        env={"OPSFLOW_DESK_URL": access_desk.url, "OPSFLOW_TOKEN": carol.token},
    )
    assert refused.exit_code == 1
    assert "cannot approve their own request" in " ".join(refused.output.split())
    active = opsflow(bob, "approve", str(grant["id"]), "--comment", "ok")
    assert active["state"] == "active" and active["hosts"] == WEB
    assert logins(access_estate, WEB, carol) == dict.fromkeys(WEB, 0)
    listed = opsflow(bob, "list", "--state", "active")
    assert [g["id"] for g in listed] == [grant["id"]]
    assert opsflow(carol, "revoke", str(grant["id"]))["state"] == "revoked"
    assert logins(access_estate, ALL, carol) == dict.fromkeys(ALL)
