"""What a host holds of access: one account with its keys, a root-owned file, and for review
every account, key and sudo rule opsflow manages there. Reads only."""

from __future__ import annotations

import base64
import re

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict, Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host
from opsflow.itsm.access import MARKER_PREFIX, key_body
from opsflow.tasks.access.steps import TIMEOUT_S, script
from opsflow.tasks.retry import RETRY_TRANSIENT
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
"""Where sudo rules live; opsflow's are the files named opsflow-* in it."""

GRANT_MARKER = re.compile(rf"^{MARKER_PREFIX}(\d+)$")
"""A grant's marker (`opsflow-grant-<id>`): a key line's comment, a sudoers file's name."""


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


def parse_account(host: str, username: str, output: str) -> Account:
    """The `Account` in the output of `read_account.sh`: three framed lines, the passwd entry
    and the groups (root's records, one line each), then the start of the user's own
    authorized_keys in base64 (one byte over the bound at most, to tell an oversized file),
    so nothing the user writes can pass for a line.

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
    bound = str(AUTHORIZED_KEYS_MAX_BYTES + 1)
    argv = ["sh", "-c", script("read_account"), "opsflow", username, bound]
    result = execute(host, argv, timeout_s=TIMEOUT_S, check=False)
    if result.exit_status == 2:
        return None
    if not result.ok:
        raise PermanentError(f"{host.name}: cannot read account {username!r}: {result.stderr}")
    return parse_account(host.name, username, result.stdout)


def as_user(account: Account, argv: list[str]) -> list[str]:
    """`argv` run with the account's uid, gid and groups, so file access is the user's own."""
    return [
        "setpriv",
        f"--reuid={account.uid}",
        f"--regid={account.gid}",
        "--init-groups",
        "--",
        *argv,
    ]


def grant_of_key_line(line: str) -> int | None:
    """The grant id a key line is marked with, or None for a line opsflow did not write."""
    parts = line.split()
    match = GRANT_MARKER.match(parts[-1]) if len(parts) >= 3 else None
    return int(match.group(1)) if match else None


def read_file(host: Host, path: str) -> str | None:
    """A root-owned file's content, or None when it does not exist."""
    result = execute(
        host, ["sh", "-c", script("read_file"), "opsflow", path], timeout_s=TIMEOUT_S, check=False
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


def parse_access_facts(host: str, output: str) -> AccessFacts:
    """Turn the output of `read_access_facts.sh` into `AccessFacts`."""
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
            match = GRANT_MARKER.match(name)
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
    argv = ["sh", "-c", script("read_access_facts"), "opsflow", MANAGED_GROUP, SUDOERS_DIR]
    result = execute(host, [*argv, script("marked_key_lines"), *bounds], timeout_s=120)
    return parse_access_facts(host.name, result.stdout)
