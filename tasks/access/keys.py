"""SSH keys on hosts: a grant's key line in an account's authorized_keys, written as the user."""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import TypeAdapter

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host
from opsflow.inventory.types import SSHPublicKey
from opsflow.itsm.access import marker
from opsflow.tasks.access.accounts import UnmanagedAccountError
from opsflow.tasks.access.facts import as_user, grant_of_key_line, read_account
from opsflow.tasks.access.steps import (
    RETRYING,
    TIMEOUT_S,
    log_rollback,
    made,
    on_undo,
    reported,
    script,
    valid_names,
)
from opsflow.tasks.change import Change
from opsflow.tasks.ssh import execute

_PUBLIC_KEY: TypeAdapter[str] = TypeAdapter(SSHPublicKey)


class AccountMissingError(PermanentError):
    """The account a key is for does not exist on the host."""


def key_line(public_key: str, grant_id: int) -> str:
    """The authorized_keys line for a grant: the key's type and body, and the grant's marker."""
    key_type, body = public_key.split()[:2]
    return f"{key_type} {body} {marker(grant_id)}"


@task(**RETRYING, task_run_name="install_key[{username}@{host.name}]")
@reported
def install_key(
    host: Host, username: str, public_key: str, grant_id: int, dry_run: bool = False
) -> Change:
    """Append the grant's key line to the account's authorized_keys unless it is there."""
    valid_names(username)
    line = key_line(_PUBLIC_KEY.validate_python(public_key), grant_id)
    target = f"key {marker(grant_id)} of {username}"
    keys_file = f"~{username}/.ssh/authorized_keys"
    already = f"{marker(grant_id)} already in {keys_file}"
    account = read_account(host, username)
    if account is not None and not account.managed:
        raise UnmanagedAccountError(host.name, username)
    if account is not None and line in account.authorized_keys:
        return Change.unchanged(host.name, "install_key", target, already)
    if dry_run:
        return Change.planned(
            host.name, "install_key", target, f"add {marker(grant_id)} to {keys_file}"
        )
    if account is None:
        raise AccountMissingError(f"{host.name}: no account {username!r} to install a key for")
    result = execute(
        host,
        as_user(account, ["sh", "-c", script("add_key"), "opsflow", account.home]),
        timeout_s=TIMEOUT_S,
        stdin=(line + "\n").encode(),
    )
    if result.stdout.strip() != "changed":  # another run added it since it was read
        return Change.unchanged(host.name, "install_key", target, already)
    what = f"added {marker(grant_id)} to {keys_file}"
    return made(host, "install_key", target, what, username=username, grant_id=grant_id)


@on_undo(install_key)
def _undo_install_key(undo: dict[str, Any]) -> None:
    """The grant failed elsewhere: take out the key line this task added."""
    log_rollback(remove_key.fn(undo["host"], undo["username"], undo["grant_id"]))


@task(**RETRYING, task_run_name="remove_key[{username}@{host.name}]")
@reported
def remove_key(host: Host, username: str, grant_id: int, dry_run: bool = False) -> Change:
    """Remove the key lines marked with the grant from the account's authorized_keys.

    An oversized file (not read) is filtered on the host all the same, as the user, line by
    line: the grant's key goes whatever else the user put in the file.
    """
    valid_names(username)
    tag = marker(grant_id)
    target = f"key {tag} of {username}"

    def unchanged(why: str) -> Change:
        return Change.unchanged(host.name, "remove_key", target, why)

    account = read_account(host, username)
    if account is None:
        return unchanged(f"no account {username}")
    marked = any(grant_of_key_line(line) == grant_id for line in account.authorized_keys)
    if not (marked or account.keys_oversized):
        return unchanged(f"no {tag} line in ~{username}/.ssh/authorized_keys")
    if dry_run:
        lines = f"any {tag} line" if account.keys_oversized else tag
        return Change.planned(
            host.name, "remove_key", target, f"remove {lines} from ~{username}/.ssh/authorized_keys"
        )
    result = execute(
        host,
        as_user(account, ["sh", "-c", script("remove_key"), "opsflow", account.home, tag]),
        timeout_s=TIMEOUT_S,
    )
    if result.stdout.strip() != "changed":
        return unchanged(f"no {tag} line in ~{username}/.ssh/authorized_keys")
    return Change.made(
        host.name, "remove_key", target, f"removed {tag} from ~{username}/.ssh/authorized_keys"
    )
