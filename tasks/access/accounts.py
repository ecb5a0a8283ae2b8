"""Accounts on hosts: a managed account made for a grant, and removed with all it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host
from opsflow.itsm.access import AccessGrant, explains_key, explains_sudo_rule, key_body, marker
from opsflow.tasks.access.facts import (
    MANAGED_GROUP,
    SUDOERS_DIR,
    grant_of_key_line,
    read_account,
    read_file,
)
from opsflow.tasks.access.steps import (
    RETRYING,
    TIMEOUT_S,
    log,
    log_rollback,
    made,
    on_undo,
    reported,
    script,
    valid_names,
)
from opsflow.tasks.change import Change
from opsflow.tasks.ssh import execute

PROCESSES_LEFT_EXIT = 75
"""Exit status of `delete_account.sh` when the account's processes outlive SIGKILL."""


class UnmanagedAccountError(PermanentError):
    """An account by that name exists on the host and opsflow did not create it."""

    def __init__(self, host: str, username: str):
        super().__init__(
            f"{host}: account {username!r} exists and is not in group {MANAGED_GROUP}: "
            "opsflow does not manage it and will not grant access through it"
        )


class ProcessesLeftError(PermanentError):
    """The account's processes outlived SIGKILL, so the account was locked but not removed."""


@task(**RETRYING, task_run_name="ensure_account[{username}@{host.name}]")
@reported
def ensure_account(host: Host, username: str, dry_run: bool = False) -> Change:
    """Create `username` in group opsflow-access unless it exists; refuse an unmanaged one."""
    valid_names(username)
    target = f"account {username}"
    account = read_account(host, username)
    if account is not None:
        if not account.managed:
            raise UnmanagedAccountError(host.name, username)
        return Change.unchanged(
            host.name,
            "ensure_account",
            target,
            f"{username} exists (uid {account.uid}) in group {MANAGED_GROUP}",
        )
    if dry_run:
        return Change.planned(
            host.name, "ensure_account", target, f"create {username} in group {MANAGED_GROUP}"
        )
    result = execute(
        host,
        ["sh", "-c", script("create_account"), "opsflow", username, MANAGED_GROUP],
        timeout_s=TIMEOUT_S,
    )
    uid, group = result.stdout.split()
    created = " (group created)" if group == "created" else ""
    return made(
        host,
        "ensure_account",
        target,
        f"created {username} (uid {uid}) in group {MANAGED_GROUP}{created}",
        username=username,
        group_created=group == "created",
    )


@on_undo(ensure_account)
def _undo_ensure_account(undo: dict[str, Any]) -> None:
    """The grant failed elsewhere: remove the account this task created, unless now in use."""
    change = remove_account.fn(undo["host"], undo["username"], still_granted=())
    log_rollback(change)
    if change.changed and undo["group_created"]:
        result = execute(
            undo["host"], ["sh", "-c", script("delete_empty_group"), "opsflow", MANAGED_GROUP]
        )
        log("rollback %s: group %s %s", change.host, MANAGED_GROUP, result.stdout.strip())


@task(**RETRYING, task_run_name="remove_account[{username}@{host.name}]")
@reported
def remove_account(
    host: Host,
    username: str,
    still_granted: Sequence[AccessGrant] | None = (),
    dry_run: bool = False,
) -> Change:
    """Remove a managed account, its home, crontab, at jobs and every process it runs.

    The account is locked first and its processes killed by uid in every namespace; if any
    survive, it stays locked and `ProcessesLeftError` says which. An unmanaged account is
    left alone. The account stays only while it holds exactly the key line or the sudo rule
    that a grant in `still_granted` installed: the caller passes the live grants covering
    this host, and a marker the user wrote on some other key keeps nothing (`explains_key`,
    as review decides). `still_granted` None removes it whatever it holds (review --enforce).
    """
    valid_names(username)
    target = f"account {username}"

    def unchanged(why: str) -> Change:
        return Change.unchanged(host.name, "remove_account", target, why)

    account = read_account(host, username)
    if account is None:
        return unchanged(f"no account {username}")
    if not account.managed:
        return unchanged(f"{username} is not in group {MANAGED_GROUP}: not opsflow's to remove")
    if still_granted is not None:
        keys = sum(
            any(explains_key(g, username, grant_id, key_body(line)) for g in still_granted)
            for line in account.authorized_keys
            if (grant_id := grant_of_key_line(line)) is not None
        )
        rules = sum(
            explains_sudo_rule(
                g, marker(g.id), read_file(host, f"{SUDOERS_DIR}/{marker(g.id)}") or ""
            )
            for g in still_granted
            if g.privilege == "sudo" and g.username == username
        )
        if keys or rules:
            return unchanged(
                f"{username} still has {keys} opsflow key(s) and {rules} sudo rule(s) of live "
                "grants"
            )
    if dry_run:
        return Change.planned(
            host.name,
            "remove_account",
            target,
            f"remove {username}, its home, crontab, at jobs and processes",
        )
    result = execute(
        host,
        ["sh", "-c", script("delete_account"), "opsflow", username, str(PROCESSES_LEFT_EXIT)],
        timeout_s=TIMEOUT_S,
        check=False,
    )
    if result.exit_status == PROCESSES_LEFT_EXIT:
        raise ProcessesLeftError(
            f"{host.name}: {username} locked but not removed: {result.stderr.strip()[-500:]}"
        )
    if not result.ok:
        raise PermanentError(
            f"{host.name}: cannot remove {username}: exit {result.exit_status}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return Change.made(
        host.name,
        "remove_account",
        target,
        f"removed {username} (uid {account.uid}), its home, crontab, at jobs and processes",
    )
