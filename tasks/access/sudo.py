"""Sudo rules on hosts: a grant's sudoers.d file, in place only once `visudo -c` accepts it."""

from __future__ import annotations

import re
from typing import Any

from prefect import task

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host
from opsflow.itsm.access import marker, sudo_rule_text
from opsflow.tasks.access.facts import SUDOERS_DIR, read_file
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

SUDO_RULE_NAME = re.compile(r"^opsflow-[A-Za-z0-9_-]+$")
"""Sudoers files opsflow may remove: its own, named opsflow-* (no dot, so sudo reads them)."""

VISUDO_REJECTED_EXIT = 65
"""Exit status of `write_sudo_rule.sh` when `visudo -c` refuses the rule."""


class SudoRuleRejectedError(PermanentError):
    """`visudo -c` refused the rule, so it was not put in place."""


def write_sudo_rule(host: Host, name: str, content: str) -> None:
    """Put `content` in /etc/sudoers.d/`name` atomically, only once `visudo -c` accepts it."""
    if not SUDO_RULE_NAME.match(name):
        raise ValueError(f"sudo rule name {name!r} is not opsflow-*")
    path = f"{SUDOERS_DIR}/{name}"
    result = execute(
        host,
        ["sh", "-c", script("write_sudo_rule"), "opsflow", path, str(VISUDO_REJECTED_EXIT)],
        timeout_s=TIMEOUT_S,
        check=False,
        stdin=content.encode(),
    )
    if result.exit_status == VISUDO_REJECTED_EXIT:
        raise SudoRuleRejectedError(f"{host.name}: {path}: {result.stderr.strip()}")
    if not result.ok:
        raise PermanentError(
            f"{host.name}: cannot install {path}: exit {result.exit_status}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )


@task(**RETRYING, task_run_name="install_sudo_rule[{username}@{host.name}]")
@reported
def install_sudo_rule(
    host: Host, username: str, grant_id: int, entitlement: str, dry_run: bool = False
) -> Change:
    """Install the grant's sudoers file unless it is already there with the same content.

    The file is checked by `visudo -c` before sudo can read it (`write_sudo_rule`).
    """
    valid_names(username, entitlement)
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
    what = f"{done} {path} letting {username} sudo (visudo -c passed)"
    return made(host, "install_sudo_rule", path, what, name=name, previous=previous)


@on_undo(install_sudo_rule)
def _undo_install_sudo_rule(undo: dict[str, Any]) -> None:
    """The grant failed elsewhere: remove the rule this task installed, or put back the old one."""
    if undo["previous"] is None:
        log_rollback(remove_sudo_rule.fn(undo["host"], undo["name"]))
    else:
        write_sudo_rule(undo["host"], undo["name"], undo["previous"])
        log("rollback %s: restored %s/%s", undo["host"].name, SUDOERS_DIR, undo["name"])


@task(**RETRYING, task_run_name="remove_sudo_rule[{name}@{host.name}]")
@reported
def remove_sudo_rule(host: Host, name: str, dry_run: bool = False) -> Change:
    """Remove /etc/sudoers.d/`name` (an opsflow-* file) if it exists."""
    if not SUDO_RULE_NAME.match(name):
        raise ValueError(f"sudo rule name {name!r} is not opsflow-*: opsflow leaves it alone")
    path = f"{SUDOERS_DIR}/{name}"
    exists = execute(host, ["test", "-e", path], timeout_s=TIMEOUT_S, check=False).ok
    if not exists:
        return Change.unchanged(host.name, "remove_sudo_rule", path, f"no {path}")
    if dry_run:
        return Change.planned(host.name, "remove_sudo_rule", path, f"remove {path}")
    execute(host, ["rm", "-f", "--", path], timeout_s=TIMEOUT_S)
    return Change.made(host.name, "remove_sudo_rule", path, f"removed {path}")
