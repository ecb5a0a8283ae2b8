"""A granted user cannot keep their own account through revocation, on real lab hosts.

Neither by growing their authorized_keys past what a command may print, nor by copying the
marker of a grant they hold on other hosts onto a key where that grant does not reach.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Any

import pytest

from opsflow.flows.access_provisioning import (
    grant_access,
    review_access,
    revoke_access,
)
from opsflow.itsm.access import AccessRequestCreate, marker, resolve_request
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.access.accounts import ensure_account, remove_account
from opsflow.tasks.access.facts import AUTHORIZED_KEYS_MAX_BYTES, KEY_LINES_MAX, read_access_facts
from opsflow.tasks.access.keys import install_key, remove_key
from tests.support.access_lab import Person, ssh_as

pytestmark = pytest.mark.usefixtures("access_env")

# Run by the user over SSH: $1 marked lines of their own key, appended to their own file.
MARKED_LINES = """
key=$(head -n 1 ~/.ssh/authorized_keys | cut -d' ' -f1,2)
seq 100000 $((100000 + $1 - 1)) | awk -v k="$key" '{ print k " opsflow-grant-" $1 }' \
  >> ~/.ssh/authorized_keys
"""


def mark(lines: int) -> str:
    """The command that makes the user append `lines` marked lines to their own file."""
    return shlex.join(["sh", "-c", MARKED_LINES, "sh", str(lines)])


def keys_file(lab: Any, host: str, username: str) -> str:
    found = run_on_host(host, ["cat", f"/home/{username}/.ssh/authorized_keys"], lab.directory)
    return found.stdout


def gone(lab: Any, host: str, username: str) -> bool:
    return run_on_host(host, ["getent", "passwd", username], lab.directory).returncode == 2


@pytest.fixture
def gina(access_lab: Any, access_estate: Any, access_people: dict[str, Person]) -> Any:
    """gina, granted on lab01 with carol's key; gone afterwards."""
    host = access_estate.host("lab01")
    ensure_account.fn(host, "gina")
    install_key.fn(host, "gina", access_people["carol"].public_key, 9201)
    yield host
    run_on_host(host.name, ["userdel", "--force", "--remove", "gina"], access_lab.directory)


def test_an_oversized_authorized_keys_blocks_neither_review_nor_revocation(
    access_lab: Any, gina: Any, access_people: dict[str, Person]
) -> None:
    carol = access_people["carol"]
    # Over the review's line bound, under the size bound: the first lines are listed.
    assert ssh_as(gina, "gina", carol.key_file, mark(2000)) == 0
    facts = read_access_facts.fn(gina)
    assert len([k for k in facts.ssh_keys if k.username == "gina"]) == KEY_LINES_MAX
    assert [(u.username, "2001 opsflow-marked lines" in u.reason) for u in facts.unread_keys] == [
        ("gina", True)
    ]

    # 2 MiB of marked lines, written by gina herself: more than any command may print.
    assert ssh_as(gina, "gina", carol.key_file, mark(20000)) == 0
    size = len(keys_file(access_lab, gina.name, "gina").encode())
    assert size > 2 * 1024 * 1024 > AUTHORIZED_KEYS_MAX_BYTES

    rows = review_access()
    oversized = [r for r in rows if r["kind"] == "authorized_keys"]
    assert [(r["host"], r["name"], r["explained_by"], r["action"]) for r in oversized] == [
        ("lab01", "gina", None, "reported")
    ]
    assert f"{size} bytes" in oversized[0]["detail"]
    assert not [r for r in rows if r["kind"] == "host"], "every host was read"

    # Revocation as the flow does it: the grant's key, then the account nobody else needs.
    assert remove_key.fn(gina, "gina", 9201).changed
    assert f"{marker(9201)}\n" not in keys_file(access_lab, gina.name, "gina")
    removal = remove_account.fn(gina, "gina", still_granted=[])
    assert removal.changed, removal.detail
    assert gone(access_lab, gina.name, "gina")
    assert ssh_as(gina, "gina", carol.key_file) is None


def _grant(estate: Any, requester: Person, entitlement: str, username: str) -> int:
    """A grant of `entitlement` for `username`, approved and put in place by the real flow."""
    store = open_records().access
    body = AccessRequestCreate(entitlement=entitlement, username=username, duration_minutes=30)
    resolved = resolve_request(estate, estate.person(requester.name), body)
    grant = store.request(resolved, requester.name, datetime.now(UTC))
    store.decide(grant.id, True, "bob", "", datetime.now(UTC))
    grant_access(grant.id)
    assert store.get(grant.id).state == "active"
    return grant.id


@pytest.fixture
def hank(access_lab: Any, access_estate: Any) -> Any:
    """Whatever hank is granted in the test is revoked afterwards, and his accounts removed."""
    granted: list[int] = []
    yield granted
    try:
        for grant_id in granted:
            revoke_access(grant_id)
    finally:
        for host in access_lab.hosts:
            run_on_host(host.name, ["userdel", "-f", "-r", "hank"], access_lab.directory)


def test_a_marker_of_a_grant_on_other_hosts_does_not_keep_the_account(
    access_lab: Any, access_estate: Any, access_people: dict[str, Person], hank: list[int]
) -> None:
    """hank holds web-login (lab01, lab03, lab05) and lab-login (every host). On lab02, where
    only lab-login reaches, he marks his key with web-login's marker; revoking lab-login
    removes his account there, and keeps it where web-login still holds."""
    carol = access_people["carol"]
    web = _grant(access_estate, carol, "web-login", "hank")
    hank.append(web)
    lab = _grant(access_estate, carol, "lab-login", "hank")
    hank.append(lab)
    lab02 = access_estate.host("lab02")
    body = " ".join(carol.public_key.split()[:2])
    planted = f"echo '{body} {marker(web)}' >> ~/.ssh/authorized_keys"
    assert ssh_as(lab02, "hank", carol.key_file, planted) == 0

    revoke_access(lab)

    assert open_records().access.get(lab).state == "revoked"
    assert gone(access_lab, "lab02", "hank"), "a marker hank wrote kept his account on lab02"
    assert gone(access_lab, "lab04", "hank")
    assert ssh_as(lab02, "hank", carol.key_file) is None
    for name in ("lab01", "lab03", "lab05"):
        assert not gone(access_lab, name, "hank"), f"web-login still holds on {name}"
        assert ssh_as(access_estate.host(name), "hank", carol.key_file) == 0
        assert marker(lab) not in keys_file(access_lab, name, "hank")
