"""The account, key and sudo rule tasks on real lab hosts: idempotent, dry-runnable, careful."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from prefect import flow

from opsflow.itsm.access import marker
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.access.accounts import UnmanagedAccountError, ensure_account, remove_account
from opsflow.tasks.access.facts import MANAGED_GROUP, read_access_facts, read_account
from opsflow.tasks.access.keys import install_key, remove_key
from opsflow.tasks.access.sudo import (
    SudoRuleRejectedError,
    install_sudo_rule,
    remove_sudo_rule,
    write_sudo_rule,
)
from tests.support.access_lab import Person, host_state, live_grant, ssh_as

pytestmark = pytest.mark.usefixtures("access_env")

USER = "dave"
GRANT = 9001


@pytest.fixture
def host(access_estate: Any) -> Any:
    return access_estate.host("lab05")


@pytest.fixture
def clean(access_lab: Any, host: Any) -> Any:
    """lab05 as it was, afterwards: dave and the test's sudo rules gone."""
    yield
    run_on_host(host.name, ["userdel", "--force", "--remove", USER], access_lab.directory)
    run_on_host(
        host.name,
        ["sh", "-c", "rm -f /etc/sudoers.d/opsflow-grant-9001 /etc/sudoers.d/opsflow-bad"],
        access_lab.directory,
    )


@flow
def grant_dave(host: Any, public_key: str) -> list[bool]:
    """The three grant tasks in a row, as a flow would run them."""
    return [
        ensure_account(host, USER).changed,
        install_key(host, USER, public_key, GRANT).changed,
        install_sudo_rule(host, USER, GRANT, "test").changed,
    ]


@pytest.mark.usefixtures("clean")
def test_second_run_changes_nothing_and_access_works(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    dave_key = access_people["carol"]
    assert grant_dave(host, dave_key.public_key) == [True, True, True]
    state = host_state(access_lab, host.name)
    assert grant_dave(host, dave_key.public_key) == [False, False, False]
    assert host_state(access_lab, host.name) == state
    assert ssh_as(host, USER, dave_key.key_file, "sudo -n true") == 0
    facts = read_access_facts.fn(host)
    assert [a.username for a in facts.accounts] == [USER]
    assert [(k.username, k.grant_id) for k in facts.ssh_keys] == [(USER, GRANT)]
    assert [r.name for r in facts.sudo_rules] == ["opsflow-grant-9001"]


@pytest.mark.usefixtures("clean")
def test_dry_run_reports_the_plan_and_changes_nothing(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    before = host_state(access_lab, host.name)
    plan = [
        ensure_account.fn(host, USER, dry_run=True),
        install_key.fn(host, USER, access_people["carol"].public_key, GRANT, dry_run=True),
        install_sudo_rule.fn(host, USER, GRANT, "test", dry_run=True),
    ]
    assert [c.state for c in plan] == ["planned"] * 3
    assert not any(c.changed for c in plan), "a dry run changes nothing, so reports no change"
    assert [c.detail.split()[0] for c in plan] == ["would", "would", "would"]
    assert host_state(access_lab, host.name) == before


@pytest.mark.usefixtures("clean")
def test_removal_takes_only_what_opsflow_put_there(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    ensure_account.fn(host, USER)
    install_key.fn(host, USER, access_people["carol"].public_key, GRANT)
    own = access_people["bob"].public_key
    run_on_host(
        host.name,
        ["sh", "-c", f'echo "{own}" >> /home/{USER}/.ssh/authorized_keys'],
        access_lab.directory,
    )
    assert remove_key.fn(host, USER, GRANT).changed
    assert not remove_key.fn(host, USER, GRANT).changed
    keys = run_on_host(
        host.name, ["cat", f"/home/{USER}/.ssh/authorized_keys"], access_lab.directory
    ).stdout
    assert keys.strip() == own, "the user's own key line is kept"
    assert remove_account.fn(host, USER).changed
    assert not remove_account.fn(host, USER).changed
    assert run_on_host(host.name, ["getent", "passwd", USER], access_lab.directory).returncode == 2


@pytest.mark.usefixtures("clean")
def test_a_marker_the_user_wrote_does_not_keep_the_account(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    """A granted user copies the grant's marker onto a key of their own: once the grant is
    gone, the account goes too, because only the records say which grants are live."""
    ensure_account.fn(host, USER)
    install_key.fn(host, USER, access_people["carol"].public_key, GRANT)
    own = access_people["bob"].public_key.split()[:2]
    planted = " ".join([*own, marker(GRANT + 7)])
    written = f"echo '{planted}' >> ~/.ssh/authorized_keys"
    assert ssh_as(host, USER, access_people["carol"].key_file, written) == 0
    assert remove_key.fn(host, USER, GRANT).changed
    assert remove_account.fn(host, USER, still_granted=[]).changed
    assert run_on_host(host.name, ["getent", "passwd", USER], access_lab.directory).returncode == 2


@pytest.mark.usefixtures("clean")
def test_an_account_opsflow_did_not_create_is_never_adopted_or_removed(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    run_on_host(host.name, ["useradd", "--create-home", USER], access_lab.directory)
    with pytest.raises(UnmanagedAccountError, match=f"not in group {MANAGED_GROUP}"):
        ensure_account.fn(host, USER)
    with pytest.raises(UnmanagedAccountError):
        install_key.fn(host, USER, access_people["carol"].public_key, GRANT)
    assert not remove_account.fn(host, USER, still_granted=None).changed
    assert run_on_host(host.name, ["getent", "passwd", USER], access_lab.directory).returncode == 0


@pytest.mark.usefixtures("clean")
def test_visudo_rejects_a_bad_rule_before_it_is_in_place(access_lab: Any, host: Any) -> None:
    before = host_state(access_lab, host.name)
    with pytest.raises(SudoRuleRejectedError, match="visudo rejected"):
        write_sudo_rule(host, "opsflow-bad", "dave ALL=(ALL NOPASSWD ALL\n")
    assert host_state(access_lab, host.name) == before
    sudo = run_on_host(host.name, ["sudo", "-n", "-l", "-U", "root"], access_lab.directory)
    assert sudo.returncode == 0, "sudo still reads its configuration"
    with pytest.raises(ValueError, match="not opsflow-"):
        remove_sudo_rule.fn(host, "README")


@pytest.mark.usefixtures("clean")
def test_a_symlinked_authorized_keys_cannot_make_root_write_elsewhere(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    ensure_account.fn(host, USER)
    for argv in (
        ["mkdir", "-p", f"/home/{USER}/.ssh"],
        ["chown", f"{USER}:", f"/home/{USER}/.ssh"],
    ):
        run_on_host(host.name, argv, access_lab.directory)
    run_on_host(
        host.name,
        ["ln", "-s", "/etc/shadow", f"/home/{USER}/.ssh/authorized_keys"],
        access_lab.directory,
    )
    shadow = run_on_host(host.name, ["cat", "/etc/shadow"], access_lab.directory).stdout
    with pytest.raises(Exception, match="Permission denied"):
        install_key.fn(host, USER, access_people["carol"].public_key, GRANT)
    assert run_on_host(host.name, ["cat", "/etc/shadow"], access_lab.directory).stdout == shadow


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (ensure_account.fn, ("carol;id",)),
        (ensure_account.fn, ("-rf",)),
        (remove_account.fn, ("ALL",)),
        (install_sudo_rule.fn, ("dave", GRANT, "x\nALL ALL=(ALL) NOPASSWD: ALL")),
        (install_sudo_rule.fn, ("dave ALL", GRANT, "test")),
        (install_key.fn, ("dave", 'command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA', GRANT)),
    ],
)
def test_tasks_refuse_values_that_are_not_plain_names(
    access_lab: Any, host: Any, call: Any, args: tuple
) -> None:
    before = host_state(access_lab, host.name)
    with pytest.raises(ValueError):
        call(host, *args)
    assert host_state(access_lab, host.name) == before


def _root_keys(access_lab: Any, host: Any) -> str | None:
    found = run_on_host(host.name, ["cat", "/root/.ssh/authorized_keys"], access_lab.directory)
    return found.stdout if found.returncode == 0 else None


@pytest.mark.usefixtures("clean")
def test_a_crafted_authorized_keys_cannot_pass_for_root(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    """Dave writes a file whose last lines read like root's account; nothing believes it."""
    ensure_account.fn(host, USER)
    install_key.fn(host, USER, access_people["carol"].public_key, GRANT)
    grant_line = next(iter(read_account(host, USER).authorized_keys))
    # Exactly the last 4,000 characters a command result used to keep, shaped like the
    # account script's output: a passwd entry for uid 0, the managed group, the separator.
    forged = f"root:x:0:0:root:/root:/bin/bash\n{MANAGED_GROUP}\n--opsflow-authorized-keys--\n"
    forged += grant_line + "\n"
    while len(forged) < 4000:
        forged += "#" + "x" * min(62, 4000 - len(forged) - 2) + "\n"
    assert len(forged) == 4000
    encoded = base64.b64encode(forged.encode()).decode()
    written = f"echo {encoded} | base64 -d >> ~/.ssh/authorized_keys"
    assert ssh_as(host, USER, access_people["carol"].key_file, written) == 0, (
        "dave wrote his own file"
    )
    root_before = _root_keys(access_lab, host)
    try:
        second = install_key.fn(host, USER, access_people["bob"].public_key, GRANT + 1)
        assert second.changed
        assert _root_keys(access_lab, host) == root_before, "root's keys were touched"
        account = read_account(host, USER)
        assert (account.username, account.home) == (USER, f"/home/{USER}")
        assert account.uid != 0
        bob_body = access_people["bob"].public_key.split()[1]
        dave_keys = run_on_host(
            host.name, ["cat", f"/home/{USER}/.ssh/authorized_keys"], access_lab.directory
        ).stdout
        assert bob_body in dave_keys

        assert remove_key.fn(host, USER, GRANT + 1).changed
        carol_grant = live_grant(GRANT, USER, access_people["carol"].public_key, [host.name])
        kept = remove_account.fn(host, USER, still_granted=[carol_grant])
        assert not kept.changed and "opsflow key" in kept.detail, "grant 9001 still needs it"
        assert remove_key.fn(host, USER, GRANT).changed
        assert remove_account.fn(host, USER).changed
        gone = run_on_host(host.name, ["getent", "passwd", USER], access_lab.directory)
        assert gone.returncode == 2
    finally:
        if _root_keys(access_lab, host) != root_before:
            restore = (
                "rm -f /root/.ssh/authorized_keys"
                if root_before is None
                else 'printf %s "$1" > /root/.ssh/authorized_keys'
            )
            run_on_host(
                host.name, ["sh", "-c", restore, "sh", root_before or ""], access_lab.directory
            )


def test_review_reads_every_managed_account_and_key(
    access_lab: Any, host: Any, access_people: dict[str, Person]
) -> None:
    """Eighty accounts, each with a key: far more output than any tail; all are read."""
    names = [f"bulk{n:03d}" for n in range(80)]
    key = access_people["carol"].public_key
    script = """set -e
group=$1 key=$2; shift 2
getent group "$group" >/dev/null || groupadd --system "$group"
n=9100
for name in "$@"; do
  useradd --create-home --groups "$group" -- "$name"
  mkdir -p "/home/$name/.ssh"
  printf '%s opsflow-grant-%s\\n' "$key" "$n" > "/home/$name/.ssh/authorized_keys"
  n=$((n + 1))
done
"""
    removal = 'for name in "$@"; do userdel --force --remove -- "$name" 2>/dev/null; done; true'
    created = run_on_host(
        host.name, ["sh", "-c", script, "sh", MANAGED_GROUP, key, *names], access_lab.directory
    )
    try:
        assert created.returncode == 0, created.stderr
        facts = read_access_facts.fn(host)
        assert sorted(a.username for a in facts.accounts) == names
        assert sorted((k.username, k.grant_id) for k in facts.ssh_keys) == [
            (name, 9100 + n) for n, name in enumerate(names)
        ]
    finally:
        run_on_host(host.name, ["sh", "-c", removal, "sh", *names], access_lab.directory)
