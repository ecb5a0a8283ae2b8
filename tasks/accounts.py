"""Accounts, SSH keys and sudo rules on hosts: what access grants put in place and take away.

Each task reads the host's state and changes only what differs, in the same call, and returns
a `Change` (unchanged and why, or made and what); with `dry_run` it reports what it would do
(planned) and changes nothing. Everything opsflow puts on a host is marked so review can tell
it from the rest: accounts are members of the group `opsflow-access`, key lines end with the
comment `opsflow-grant-<id>`, sudo rules live in `/etc/sudoers.d/opsflow-grant-<id>`.
Nothing else on a host is ever removed.

Scripts are constants; values reach them as positional arguments (quoted by `tasks.ssh`) or on
standard input (key lines, sudoers text). A user's own files are read and written with that
user's identity (`setpriv`), so a symlink planted in a home directory cannot make root
overwrite or disclose another file.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from prefect import task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.transactions import Transaction, get_transaction
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host
from opsflow.inventory.types import Name, SSHPublicKey, Username
from opsflow.itsm.access import (
    MARKER_PREFIX,
    AccessGrant,
    explains_key,
    explains_sudo_rule,
    key_body,
    marker,
    sudo_rule_text,
)
from opsflow.tasks.change import Change
from opsflow.tasks.retry import RETRY_TRANSIENT, is_transient
from opsflow.tasks.ssh import execute

MANAGED_GROUP = "opsflow-access"
"""Every account opsflow creates is in this group; accounts outside it are never touched."""

AUTHORIZED_KEYS_MAX_BYTES = 256 * 1024
"""The largest authorized_keys opsflow reads. The file is the user's to write: a bigger one is
reported as oversized and holds no key opsflow trusts, so it can neither overflow a command's
output nor block the user's own revocation."""

KEY_LINES_MAX = 32
KEY_LINES_MAX_BYTES = 16 * 1024
"""Review lists at most this many opsflow-marked key lines (and bytes) per account; more is
reported as an overflow, so one user's file cannot make the review of a whole host fail."""

SUDOERS_DIR = "/etc/sudoers.d"
SUDO_RULE_NAME = re.compile(r"^opsflow-[A-Za-z0-9_-]+$")
"""Sudoers files opsflow may remove: its own, named opsflow-* (no dot, so sudo reads them)."""

_GRANT_COMMENT = re.compile(rf"^{MARKER_PREFIX}(\d+)$")
_USERNAME: TypeAdapter[str] = TypeAdapter(Username)
_NAME: TypeAdapter[str] = TypeAdapter(Name)
_PUBLIC_KEY: TypeAdapter[str] = TypeAdapter(SSHPublicKey)


def _valid(username: str, entitlement: str | None = None) -> None:
    """Refuse values that are not plain names before they reach a host (ValueError)."""
    _USERNAME.validate_python(username)
    if entitlement is not None:
        _NAME.validate_python(entitlement)


_TIMEOUT_S = 60.0
_Step = TypeVar("_Step", bound=Callable[..., Change])


class UnmanagedAccountError(PermanentError):
    """An account by that name exists on the host and opsflow did not create it."""

    def __init__(self, host: str, username: str):
        super().__init__(
            f"{host}: account {username!r} exists and is not in group {MANAGED_GROUP}: "
            "opsflow does not manage it and will not grant access through it"
        )


class AccountMissingError(PermanentError):
    """The account a key is for does not exist on the host."""


class ProcessesLeftError(PermanentError):
    """The account's processes outlived SIGKILL, so the account was locked but not removed."""


class SudoRuleRejectedError(PermanentError):
    """`visudo -c` refused the rule, so it was not put in place."""


class Account(BaseModel):
    """An account as the host's user database reports it, with its authorized keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    uid: int
    gid: int
    home: str
    groups: list[str]
    authorized_keys: list[str] = Field(description="Lines of ~/.ssh/authorized_keys.")
    keys_oversized: bool = Field(
        default=False,
        description="authorized_keys is over AUTHORIZED_KEYS_MAX_BYTES: not read, so "
        "authorized_keys is empty and no key in the file is trusted.",
    )

    @property
    def managed(self) -> bool:
        """Whether opsflow created (and so may remove) this account."""
        return MANAGED_GROUP in self.groups


# --- reading ---------------------------------------------------------------------------------

_ACCOUNT_SCRIPT = """
entry=$(getent passwd "$1") || exit 2
groups=$(id -nG "$1") || exit 3
printf '%s\\n%s\\n' "$entry" "$groups"
uid=$(printf '%s' "$entry" | cut -d: -f3)
gid=$(printf '%s' "$entry" | cut -d: -f4)
home=$(printf '%s' "$entry" | cut -d: -f6)
# As the user: a symlink in their home must not make root read another file. An unreadable
# file reads as no keys, so a user cannot stop their own revocation by breaking it; at most
# $2 bytes are read, so nor can an endless or huge one.
{ setpriv --reuid="$uid" --regid="$gid" --init-groups -- \\
    sh -c '[ -f "$1" ] && exec head -c "$2" -- "$1"' sh "$home/.ssh/authorized_keys" "$2" \\
    2>/dev/null || true; } | base64 -w0
echo
"""
"""Three framed lines: the passwd entry and the groups (root's records, one line each), then
the start of the user's own authorized_keys in base64 (one byte over the bound at most, to
tell an oversized file), so nothing the user writes can pass for a line."""


def parse_account(host: str, username: str, output: str) -> Account:
    """The `Account` in the account script's output.

    Raises PermanentError unless the output is exactly three lines and its passwd entry is
    for `username`: an account is never read as someone else's.
    """
    lines = output.split("\n")
    fields = lines[0].split(":")
    if len(lines) != 4 or lines[3] or len(fields) != 7 or fields[0] != username:
        raise PermanentError(
            f"{host}: account {username!r}: unexpected account data "
            f"({len(lines) - 1} line(s), passwd entry for {fields[0]!r})"
        )
    if not (fields[2].isdigit() and fields[3].isdigit()):
        raise PermanentError(f"{host}: account {username!r}: uid or gid is not a number")
    try:
        raw = base64.b64decode(lines[2], validate=True)
    except ValueError as exc:
        raise PermanentError(f"{host}: account {username!r}: keys unreadable: {exc}") from None
    oversized = len(raw) > AUTHORIZED_KEYS_MAX_BYTES
    return Account(
        username=username,
        uid=int(fields[2]),
        gid=int(fields[3]),
        home=fields[5],
        groups=lines[1].split(),
        authorized_keys=[] if oversized else raw.decode("utf-8", "replace").splitlines(),
        keys_oversized=oversized,
    )


def read_account(host: Host, username: str) -> Account | None:
    """The account called `username` on `host` and its authorized keys, or None if none.

    Identity (uid, gid, home, groups) comes from the host's user database; only the key
    lines come from the user's own file, read whole up to `AUTHORIZED_KEYS_MAX_BYTES` and
    framed apart. A bigger file reads as no keys (`Account.keys_oversized`).
    """
    argv = ["sh", "-c", _ACCOUNT_SCRIPT, "opsflow", username, str(AUTHORIZED_KEYS_MAX_BYTES + 1)]
    result = execute(host, argv, timeout_s=_TIMEOUT_S, check=False)
    if result.exit_status == 2:
        return None
    if not result.ok:
        raise PermanentError(f"{host.name}: cannot read account {username!r}: {result.stderr}")
    return parse_account(host.name, username, result.stdout)


def _as_user(account: Account, argv: list[str]) -> list[str]:
    """`argv` run with the account's uid, gid and groups, so file access is the user's own."""
    return [
        "setpriv",
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--init-groups",
        "--",
        *argv,
    ]


def key_line(public_key: str, grant_id: int) -> str:
    """The authorized_keys line for a grant: the key's type and body, and the grant's marker."""
    key_type, body = public_key.split()[:2]
    return f"{key_type} {body} {marker(grant_id)}"


def grant_of_key_line(line: str) -> int | None:
    """The grant id a key line is marked with, or None for a line opsflow did not write."""
    parts = line.split()
    match = _GRANT_COMMENT.match(parts[-1]) if len(parts) >= 3 else None
    return int(match.group(1)) if match else None


def read_file(host: Host, path: str) -> str | None:
    """A root-owned file's content, or None when it does not exist."""
    result = execute(
        host, ["sh", "-c", 'cat -- "$1" 2>/dev/null || exit 2', "opsflow", path], check=False
    )
    if result.exit_status == 2:
        return None
    if not result.ok:
        raise PermanentError(f"{host.name}: cannot read {path}: {result.stderr}")
    return result.stdout


class ManagedAccount(BaseModel):
    """An account in the group opsflow-access."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    uid: int
    home: str


class GrantKey(BaseModel):
    """A key line marked opsflow-grant-<id> in some account's authorized_keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    grant_id: int
    key: str = Field(description="The key's type and body.")


class UnreadKeys(BaseModel):
    """An account whose authorized_keys review could not read whole, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    reason: str


class SudoRule(BaseModel):
    """A sudoers file named opsflow-* and its content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    grant_id: int | None
    content: str


class AccessFacts(BaseModel):
    """Everything opsflow manages on one host, as the host reports it."""

    model_config = ConfigDict(extra="forbid")

    host: str
    accounts: list[ManagedAccount] = Field(default_factory=list)
    # Not `keys`: Prefect's result handling takes anything with a `keys` attribute for a mapping.
    ssh_keys: list[GrantKey] = Field(default_factory=list)
    sudo_rules: list[SudoRule] = Field(default_factory=list)
    unread_keys: list[UnreadKeys] = Field(
        default_factory=list,
        description="Accounts whose authorized_keys is oversized or holds more marked lines "
        "than review lists: some of their keys are not in `ssh_keys`.",
    )


_FACTS_SCRIPT = """
group=$(getent group "$1") || group=
gid=$(printf '%s' "$group" | cut -d: -f3)
members=$(printf '%s' "$group" | cut -d: -f4)
getent passwd | while IFS=: read -r name _ uid pgid _ home _; do
  case ",$members," in
    *",$name,"*) printf 'account\\t%s\\t%s\\t%s\\n' "$name" "$uid" "$home" ;;
    *) if [ -n "$gid" ] && [ "$pgid" = "$gid" ]; then
         printf 'account\\t%s\\t%s\\t%s\\n' "$name" "$uid" "$home"
       fi ;;
  esac
  # As the account itself: a link it planted in its home (~/.ssh -> /root/.ssh) must not
  # make root read, and report as this account's, another account's keys.
  setpriv --reuid="$uid" --regid="$pgid" --init-groups -- sh -c "$3" sh \\
    "$home/.ssh/authorized_keys" "$name" "$4" "$5" "$6" </dev/null 2>/dev/null
done
for f in "$2"/opsflow-*; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  printf 'sudo\\t%s\\t%s\\n' "${f##*/}" "$(base64 -w0 < "$f")"
done
exit 0
"""


_KEY_LINES_SCRIPT = """
[ -f "$1" ] && [ ! -L "$1" ] || exit 0
size=$(wc -c < "$1") || exit 0
if [ "$size" -gt "$3" ]; then printf 'keys-oversized\\t%s\\t%s\\n' "$2" "$size"; exit 0; fi
grep -E '[[:space:]]opsflow-grant-[0-9]+[[:space:]]*$' -- "$1" |
  LC_ALL=C awk -v name="$2" -v lines="$4" -v bytes="$5" '
    { n++; b += length($0) + 1 }
    n <= lines && b <= bytes { print "key\\t" name "\\t" $0; next }
    { over = 1 }
    END { if (over) print "keys-overflow\\t" name "\\t" n }'
"""
"""Run as the account: its marked key lines, or a line saying its file is over the size bound,
and one saying how many marked lines it holds when they pass the listing bounds."""


def parse_access_facts(host: str, output: str) -> AccessFacts:
    """Turn the output of the facts script into `AccessFacts`."""
    facts = AccessFacts(host=host)
    for line in output.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "account":
            name, uid, home = rest.split("\t", 2)
            facts.accounts.append(ManagedAccount(username=name, uid=int(uid), home=home))
        elif kind == "key":
            name, _, key = rest.partition("\t")
            grant_id = grant_of_key_line(key)
            if grant_id is not None:
                facts.ssh_keys.append(GrantKey(username=name, grant_id=grant_id, key=key_body(key)))
        elif kind == "keys-oversized":
            name, _, size = rest.partition("\t")
            reason = (
                f"authorized_keys is {size} bytes, over the {AUTHORIZED_KEYS_MAX_BYTES}-byte "
                "bound: not read, no key in it is trusted"
            )
            facts.unread_keys.append(UnreadKeys(username=name, reason=reason))
        elif kind == "keys-overflow":
            name, _, count = rest.partition("\t")
            reason = (
                f"authorized_keys holds {count} opsflow-marked lines, over the {KEY_LINES_MAX}"
                f"-line or {KEY_LINES_MAX_BYTES}-byte bound: only the first are listed"
            )
            facts.unread_keys.append(UnreadKeys(username=name, reason=reason))
        elif kind == "sudo":
            name, _, encoded = rest.partition("\t")
            match = _GRANT_COMMENT.match(name)
            facts.sudo_rules.append(
                SudoRule(
                    name=name,
                    grant_id=int(match.group(1)) if match else None,
                    content=base64.b64decode(encoded).decode("utf-8", "replace"),
                )
            )
    return facts


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="read_access_facts[{host.name}]",
)
def read_access_facts(host: Host) -> AccessFacts:
    """The accounts, keys and sudo rules opsflow manages on a host, for review."""
    bounds = [str(n) for n in (AUTHORIZED_KEYS_MAX_BYTES, KEY_LINES_MAX, KEY_LINES_MAX_BYTES)]
    argv = ["sh", "-c", _FACTS_SCRIPT, "opsflow", MANAGED_GROUP, SUDOERS_DIR, _KEY_LINES_SCRIPT]
    result = execute(host, [*argv, *bounds], timeout_s=120)
    return parse_access_facts(host.name, result.stdout)


# --- changing --------------------------------------------------------------------------------

_RETRYING: dict[str, Any] = {
    "cache_policy": NONE,
    "retries": 2,
    "retry_delay_seconds": [1, 3],
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
    "timeout_seconds": 120,
}
"""Every changing task is idempotent, so it retries on transient errors (and only on those).

Inside a Prefect transaction use `.with_options(retries=0)`: a failed attempt rolls back
the task's enclosing transaction at once, even if a retry then succeeds.
"""


def _remember(**undo: Any) -> None:
    """Keep what a task changed on its transaction, for its rollback hook."""
    transaction = get_transaction()
    if transaction is not None:
        transaction.set("undo", undo)


def _undo_data(transaction: Transaction) -> dict[str, Any] | None:
    return transaction.get("undo", None)


def _reported(step: _Step) -> _Step:
    """`step`, logging the change it returns, whether it runs as a task or through `.fn`."""

    @functools.wraps(step)
    def reported(*args: Any, **kwargs: Any) -> Change:
        change = step(*args, **kwargs)
        _log("%s: %s", change.host, change.detail)
        return change

    return cast(_Step, reported)


def _log(message: str, *args: Any) -> None:
    try:
        logger: Any = get_run_logger()
    except MissingContextError:  # called as a plain function, outside any run
        logger = logging.getLogger(__name__)
    logger.info(message, *args)


_CREATE_ACCOUNT_SCRIPT = """
set -e
group=existed
if ! getent group "$2" >/dev/null; then groupadd --force --system "$2"; group=created; fi
if ! useradd --create-home --shell /bin/bash --password '*' --groups "$2" \\
    --comment 'opsflow access grant' -- "$1"; then
  [ "$group" = existed ] || groupdel "$2"
  exit 1
fi
echo "$(id -u "$1") $group"
"""
# The password '*' matches no password yet leaves the account unlocked: sshd without PAM
# refuses key logins to locked accounts ('!'), which is useradd's default.


_DELETE_EMPTY_GROUP_SCRIPT = """
entry=$(getent group "$1") || { echo "already gone"; exit 0; }
gid=$(printf '%s' "$entry" | cut -d: -f3)
if [ -n "$(printf '%s' "$entry" | cut -d: -f4)" ] || getent passwd | cut -d: -f4 | grep -qx "$gid"
then echo "kept: it has members"; exit 0; fi
groupdel "$1" && echo removed
"""


@task(**_RETRYING, task_run_name="ensure_account[{username}@{host.name}]")
@_reported
def ensure_account(host: Host, username: str, dry_run: bool = False) -> Change:
    """Create `username` in group opsflow-access unless it exists; refuse an unmanaged one."""
    _valid(username)
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
        ["sh", "-c", _CREATE_ACCOUNT_SCRIPT, "opsflow", username, MANAGED_GROUP],
        timeout_s=_TIMEOUT_S,
    )
    uid, group = result.stdout.split()
    _remember(host=host, username=username, group_created=group == "created")
    created = " (group created)" if group == "created" else ""
    return Change.made(
        host.name,
        "ensure_account",
        target,
        f"created {username} (uid {uid}) in group {MANAGED_GROUP}{created}",
    )


@ensure_account.on_rollback
def _undo_ensure_account(transaction: Transaction) -> None:
    """The grant failed elsewhere: remove the account this task created, unless now in use."""
    undo = _undo_data(transaction)
    if not undo:
        return
    change = remove_account.fn(undo["host"], undo["username"], still_granted=())
    _log("rollback %s: %s", change.host, change.detail)
    if change.changed and undo["group_created"]:
        result = execute(
            undo["host"], ["sh", "-c", _DELETE_EMPTY_GROUP_SCRIPT, "opsflow", MANAGED_GROUP]
        )
        _log("rollback %s: group %s %s", change.host, MANAGED_GROUP, result.stdout.strip())


_ADD_KEY_SCRIPT = """
set -eu
umask 077
mkdir -p -- "$1/.ssh"
f="$1/.ssh/authorized_keys"
IFS= read -r line
if [ -f "$f" ] && grep -qxF -- "$line" "$f"; then echo unchanged; exit 0; fi
if [ -s "$f" ] && [ -n "$(tail -c 1 -- "$f")" ]; then echo >> "$f"; fi
printf '%s\\n' "$line" >> "$f"
echo changed
"""


@task(**_RETRYING, task_run_name="install_key[{username}@{host.name}]")
@_reported
def install_key(
    host: Host, username: str, public_key: str, grant_id: int, dry_run: bool = False
) -> Change:
    """Append the grant's key line to the account's authorized_keys unless it is there."""
    _valid(username)
    line = key_line(_PUBLIC_KEY.validate_python(public_key), grant_id)
    target = f"key {marker(grant_id)} of {username}"
    account = read_account(host, username)
    if account is None:
        if dry_run:
            return Change.planned(
                host.name,
                "install_key",
                target,
                f"add {marker(grant_id)} to ~{username}/.ssh/authorized_keys",
            )
        raise AccountMissingError(f"{host.name}: no account {username!r} to install a key for")
    if not account.managed:
        raise UnmanagedAccountError(host.name, username)
    if line in account.authorized_keys:
        return Change.unchanged(
            host.name,
            "install_key",
            target,
            f"{marker(grant_id)} already in ~{username}/.ssh/authorized_keys",
        )
    if dry_run:
        return Change.planned(
            host.name,
            "install_key",
            target,
            f"add {marker(grant_id)} to ~{username}/.ssh/authorized_keys",
        )
    result = execute(
        host,
        _as_user(account, ["sh", "-c", _ADD_KEY_SCRIPT, "opsflow", account.home]),
        timeout_s=_TIMEOUT_S,
        stdin=(line + "\n").encode(),
    )
    if result.stdout.strip() != "changed":  # another run added it since it was read
        return Change.unchanged(
            host.name,
            "install_key",
            target,
            f"{marker(grant_id)} already in ~{username}/.ssh/authorized_keys",
        )
    _remember(host=host, username=username, grant_id=grant_id)
    return Change.made(
        host.name,
        "install_key",
        target,
        f"added {marker(grant_id)} to ~{username}/.ssh/authorized_keys",
    )


@install_key.on_rollback
def _undo_install_key(transaction: Transaction) -> None:
    """The grant failed elsewhere: take out the key line this task added."""
    undo = _undo_data(transaction)
    if undo:
        change = remove_key.fn(undo["host"], undo["username"], undo["grant_id"])
        _log("rollback %s: %s", change.host, change.detail)


_WRITE_SUDO_RULE_SCRIPT = """
set -eu
dir=$(dirname -- "$1")
# A name with a dot: sudo skips it, so a rule is never read before visudo has passed it.
tmp=$(mktemp -- "$dir/.opsflow.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod 0440 -- "$tmp"
if ! out=$(visudo -c -f "$tmp" 2>&1); then
  printf 'visudo rejected the rule: %s\\n' "$out" >&2
  exit 65
fi
mv -f -- "$tmp" "$1"
trap - EXIT
"""


def write_sudo_rule(host: Host, name: str, content: str) -> None:
    """Put `content` in /etc/sudoers.d/`name` atomically, only once `visudo -c` accepts it."""
    if not SUDO_RULE_NAME.match(name):
        raise ValueError(f"sudo rule name {name!r} is not opsflow-*")
    path = f"{SUDOERS_DIR}/{name}"
    result = execute(
        host,
        ["sh", "-c", _WRITE_SUDO_RULE_SCRIPT, "opsflow", path],
        timeout_s=_TIMEOUT_S,
        check=False,
        stdin=content.encode(),
    )
    if result.exit_status == 65:
        raise SudoRuleRejectedError(f"{host.name}: {path}: {result.stderr.strip()}")
    if not result.ok:
        raise PermanentError(
            f"{host.name}: cannot install {path}: exit {result.exit_status}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )


@task(**_RETRYING, task_run_name="install_sudo_rule[{username}@{host.name}]")
@_reported
def install_sudo_rule(
    host: Host, username: str, grant_id: int, entitlement: str, dry_run: bool = False
) -> Change:
    """Install the grant's sudoers file unless it is already there with the same content.

    The file is checked by `visudo -c` before sudo can read it (`write_sudo_rule`).
    """
    _valid(username, entitlement)
    name = marker(grant_id)
    path = f"{SUDOERS_DIR}/{name}"
    content = sudo_rule_text(grant_id, username, entitlement)
    previous = read_file(host, path)
    if previous == content:
        return Change.unchanged(
            host.name, "install_sudo_rule", path, f"{path} already lets {username} sudo"
        )
    verb, done = ("replace", "replaced") if previous is not None else ("install", "installed")
    if dry_run:
        return Change.planned(
            host.name,
            "install_sudo_rule",
            path,
            f"{verb} {path} letting {username} sudo (after visudo -c)",
        )
    write_sudo_rule(host, name, content)
    _remember(host=host, name=name, previous=previous)
    return Change.made(
        host.name,
        "install_sudo_rule",
        path,
        f"{done} {path} letting {username} sudo (visudo -c passed)",
    )


@install_sudo_rule.on_rollback
def _undo_install_sudo_rule(transaction: Transaction) -> None:
    """The grant failed elsewhere: remove the rule this task installed, or put back the old one."""
    undo = _undo_data(transaction)
    if not undo:
        return
    if undo["previous"] is None:
        change = remove_sudo_rule.fn(undo["host"], undo["name"])
        _log("rollback %s: %s", change.host, change.detail)
    else:
        write_sudo_rule(undo["host"], undo["name"], undo["previous"])
        _log("rollback %s: restored %s/%s", undo["host"].name, SUDOERS_DIR, undo["name"])


_REMOVE_KEY_SCRIPT = """
set -eu
f="$1/.ssh/authorized_keys"
[ -f "$f" ] || { echo unchanged; exit 0; }
tmp=$(mktemp -- "$f.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
awk -v m="$2" '$NF != m' "$f" > "$tmp"
if cmp -s -- "$f" "$tmp"; then echo unchanged; exit 0; fi
mv -f -- "$tmp" "$f"
trap - EXIT
echo changed
"""


@task(**_RETRYING, task_run_name="remove_key[{username}@{host.name}]")
@_reported
def remove_key(host: Host, username: str, grant_id: int, dry_run: bool = False) -> Change:
    """Remove the key lines marked with the grant from the account's authorized_keys.

    An oversized file (not read) is filtered on the host all the same, as the user, line by
    line: the grant's key goes whatever else the user put in the file.
    """
    _valid(username)
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
        _as_user(account, ["sh", "-c", _REMOVE_KEY_SCRIPT, "opsflow", account.home, tag]),
        timeout_s=_TIMEOUT_S,
    )
    if result.stdout.strip() != "changed":
        return unchanged(f"no {tag} line in ~{username}/.ssh/authorized_keys")
    return Change.made(
        host.name, "remove_key", target, f"removed {tag} from ~{username}/.ssh/authorized_keys"
    )


@task(**_RETRYING, task_run_name="remove_sudo_rule[{name}@{host.name}]")
@_reported
def remove_sudo_rule(host: Host, name: str, dry_run: bool = False) -> Change:
    """Remove /etc/sudoers.d/`name` (an opsflow-* file) if it exists."""
    if not SUDO_RULE_NAME.match(name):
        raise ValueError(f"sudo rule name {name!r} is not opsflow-*: opsflow leaves it alone")
    path = f"{SUDOERS_DIR}/{name}"
    exists = execute(host, ["test", "-e", path], timeout_s=_TIMEOUT_S, check=False).ok
    if not exists:
        return Change.unchanged(host.name, "remove_sudo_rule", path, f"no {path}")
    if dry_run:
        return Change.planned(host.name, "remove_sudo_rule", path, f"remove {path}")
    execute(host, ["rm", "-f", "--", path], timeout_s=_TIMEOUT_S)
    return Change.made(host.name, "remove_sudo_rule", path, f"removed {path}")


PROCESSES_LEFT_EXIT = 75
"""Exit status of the removal script when the account's processes outlive SIGKILL."""

_DELETE_ACCOUNT_SCRIPT = f"""
set -eu
uid=$(id -u -- "$1")
# Locked and expired first, so no new login or job starts while its processes are killed.
usermod --lock --expiredate 1 -- "$1"
if command -v crontab >/dev/null; then crontab -r -u "$1" 2>/dev/null || true; fi
if command -v atq >/dev/null; then
  atq | awk -v u="$1" '$NF == u {{ print $1 }}' | xargs -r atrm
fi
# By uid, whatever namespaces they run in (unshare, bwrap, rootless containers): real and
# effective uid, so a setuid program the user started goes too.
left() {{ ps -A -o pid=,stat=,ruid=,euid= | awk -v u="$uid" '($3 == u || $4 == u) && $2 !~ /^Z/'; }}
i=0
while [ -n "$(left)" ] && [ "$i" -lt 50 ]; do
  pkill -KILL -U "$uid" || true
  pkill -KILL -u "$uid" || true
  sleep 0.1
  i=$((i + 1))
done
if [ -n "$(left)" ]; then
  pids=$(left | awk '{{ print $1 }}' | xargs)
  echo "processes of $1 (uid $uid) still run after SIGKILL: $pids" >&2
  exit {PROCESSES_LEFT_EXIT}
fi
userdel --force --remove -- "$1" 2>&1 | grep -v 'mail spool' >&2 || true
! getent passwd "$1" >/dev/null
"""


@task(**_RETRYING, task_run_name="remove_account[{username}@{host.name}]")
@_reported
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
    _valid(username)
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
        ["sh", "-c", _DELETE_ACCOUNT_SCRIPT, "opsflow", username],
        timeout_s=_TIMEOUT_S,
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
