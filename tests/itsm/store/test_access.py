"""Access grants as records: request rules, the state machine and the audit, on a real SQLite."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from opsflow.inventory.models import Audience, Estate, Host, Person
from opsflow.itsm.access import (
    AccessNotEntitledError,
    AccessRequestCreate,
    AccessRequestInvalidError,
    resolve_request,
)
from opsflow.itsm.states import IllegalTransitionError
from opsflow.itsm.store.access import AccessGrants
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.records import Records
from tests.support.factories import entitlement

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    key = tmp_path_factory.mktemp("keys") / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def estate(public_key: str) -> Estate:
    host_key = public_key
    return Estate(
        hosts=[
            Host(name="web1", address="127.0.99.1", host_key=host_key, groups=["web"]),
            Host(name="db1", address="127.0.99.2", host_key=host_key, groups=["db"]),
        ],
        people=[
            Person(name="carol", team="users", roles=["requester"], ssh_public_key=public_key),
            Person(name="bob", team="ops", roles=["approver"]),
            Person(name="j.doe", team="users", roles=["requester"], ssh_public_key=public_key),
        ],
        entitlements=[
            entitlement(),
            entitlement("db-sudo", "db", "sudo", Audience(teams=["ops"]), max_duration_hours=2),
        ],
    )


@pytest.fixture
def grants(records_url: str) -> AccessGrants:
    return Records(records_url).access


def ask(estate: Estate, who: str, **fields: object) -> object:
    body = AccessRequestCreate.model_validate({"entitlement": "web-login", **fields})
    person = estate.person(who)
    assert person is not None
    return resolve_request(estate, person, body)


def test_request_fills_defaults_from_entitlement_and_person(
    estate: Estate, public_key: str
) -> None:
    resolved = ask(estate, "carol")
    assert resolved.username == "carol"
    assert resolved.duration_minutes == 8 * 60
    assert resolved.ssh_public_key.split()[:2] == public_key.split()[:2]


@pytest.mark.parametrize(
    ("who", "fields", "error", "message"),
    [
        (
            "carol",
            {"entitlement": "db-sudo"},
            AccessNotEntitledError,
            "its requesters are team ops",
        ),
        ("carol", {"duration_minutes": 481}, AccessRequestInvalidError, "8 h = 480 minutes"),
        ("carol", {"entitlement": "nope"}, AccessRequestInvalidError, "no entitlement 'nope'"),
        ("carol", {"username": "root"}, AccessRequestInvalidError, "reserved system account"),
        ("carol", {"username": "bob"}, AccessRequestInvalidError, "is bob's name"),
        ("j.doe", {}, AccessRequestInvalidError, "not a valid account name"),
        ("bob", {"entitlement": "db-sudo"}, AccessRequestInvalidError, "no ssh_public_key"),
    ],
)
def test_requests_that_do_not_fit_are_refused_naming_why(
    estate: Estate, who: str, fields: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        ask(estate, who, **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "carol;id"},
        {"username": "carol\nALL ALL=(ALL) NOPASSWD: ALL"},
        {"username": "-o"},
        {"ssh_public_key": 'command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA'},
        {"ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEHt $(reboot)"},
        {"ssh_public_key": "not a key"},
        {"duration_minutes": 0},
        {"duratoin_minutes": 5},
    ],
)
def test_metacharacters_and_unknown_fields_are_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        AccessRequestCreate.model_validate({"entitlement": "web-login", **fields})


def test_life_of_a_grant_is_audited(estate: Estate, grants: AccessGrants) -> None:
    grant = grants.request(ask(estate, "carol", duration_minutes=30), "carol", T0)
    assert (grant.state, grant.privilege, grant.host_group) == ("requested", "login", "web")
    grant = grants.decide(grant.id, True, "bob", "ok", T0 + timedelta(minutes=1))
    assert (grant.state, grant.approver) == ("approved", "bob")
    grant = grants.activate(grant.id, ["web1"], T0 + timedelta(minutes=2), "flow", "run-1")
    assert grant.ends_at == T0 + timedelta(minutes=32)
    again = grants.activate(grant.id, ["web1"], T0 + timedelta(minutes=5), "flow", "run-2")
    assert again == grant, "activating an active grant again changes nothing"
    assert grants.due_for_removal(T0 + timedelta(minutes=31)) == []
    assert [g.id for g in grants.due_for_removal(T0 + timedelta(minutes=32))] == [grant.id]
    grant = grants.end(grant.id, "expired", T0 + timedelta(minutes=33), "flow", "run-3")
    assert grant.state == "expired"
    trail = grants.audit_trail(grant.id)
    assert [a.action for a in trail] == [
        "access_grant.requested",
        "access_grant.approved",
        "access_grant.active",
        "access_grant.expired",
    ]
    assert [a.actor for a in trail] == ["carol", "bob", "flow", "flow"]
    assert trail[2].before["state"] == "approved" and trail[2].after["state"] == "active"
    assert trail[3].flow_run_id == "run-3"


def test_illegal_transitions_are_refused_and_change_nothing(
    estate: Estate, grants: AccessGrants
) -> None:
    grant = grants.request(ask(estate, "carol"), "carol", T0)
    with pytest.raises(IllegalTransitionError, match="cannot go from requested to active"):
        grants.activate(grant.id, ["web1"], T0, "flow")
    denied = grants.decide(grant.id, False, "bob", "no", T0)
    with pytest.raises(IllegalTransitionError, match="none, it is final"):
        grants.decide(grant.id, True, "bob", "changed my mind", T0)
    with pytest.raises(IllegalTransitionError):
        grants.request_revoke(grant.id, "bob", T0)
    assert grants.get(grant.id) == denied
    with pytest.raises(RecordNotFoundError):
        grants.get(999)


def test_revocation_is_recorded_before_hosts_are_touched(
    estate: Estate, grants: AccessGrants
) -> None:
    grant = grants.request(ask(estate, "carol"), "carol", T0)
    grants.decide(grant.id, True, "bob", "", T0)
    grants.activate(grant.id, ["web1"], T0, "flow")
    marked = grants.request_revoke(grant.id, "carol", T0 + timedelta(minutes=1))
    assert (marked.state, marked.revoke_requested_by) == ("active", "carol")
    assert [g.id for g in grants.due_for_removal(T0 + timedelta(minutes=1))] == [grant.id]
    assert grants.request_revoke(grant.id, "bob", T0 + timedelta(minutes=2)) == marked


def test_an_approved_grant_never_activated_is_due_at_approval_plus_duration(
    estate: Estate, grants: AccessGrants
) -> None:
    grant = grants.request(ask(estate, "carol", duration_minutes=10), "carol", T0)
    grants.decide(grant.id, True, "bob", "", T0)
    assert grants.due_for_removal(T0 + timedelta(minutes=9)) == []
    assert len(grants.due_for_removal(T0 + timedelta(minutes=10))) == 1


def test_a_username_belongs_to_one_person_at_a_time(
    estate: Estate, grants: AccessGrants, public_key: str
) -> None:
    grants.request(ask(estate, "carol", username="shared"), "carol", T0)
    with pytest.raises(AccessRequestInvalidError, match="account of carol"):
        grants.request(ask(estate, "j.doe", username="shared"), "j.doe", T0)
