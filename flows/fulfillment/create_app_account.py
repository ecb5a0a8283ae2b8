"""create-app-account: an application (system, no-login) account on every host of a service."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE
from pydantic import TypeAdapter, ValidationError

from opsflow.errors import CommandFailedError
from opsflow.flows.fulfillment import FulfillmentError, FulfillmentResult, find_service
from opsflow.inventory.models import Host
from opsflow.inventory.types import Username
from opsflow.tasks.change import Change
from opsflow.tasks.fanout import map_hosts, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.retry import is_transient
from opsflow.tasks.ssh import execute

_USERNAME = TypeAdapter(Username)
NOLOGIN = "/usr/sbin/nologin"


def check_username(username: str) -> str:
    """The username if it is a valid POSIX account name; `FulfillmentError` naming it otherwise."""
    try:
        return _USERNAME.validate_python(username)
    except ValidationError:
        raise FulfillmentError(
            f"username: {username!r} is not a POSIX account name "
            "(lower-case letters, digits, '_' and '-', starting with a letter or '_', <= 32)"
        ) from None


@task(
    cache_policy=NONE,
    retries=2,  # idempotent: it looks the account up first, so a retry finds it made
    retry_delay_seconds=[1, 3],
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient,
    timeout_seconds=120,
    task_run_name="create_app_account[{username}@{host.name}]",
)
def ensure_app_account(host: Host, username: str, dry_run: bool) -> Change:
    """Create the system account with no home and no login shell unless it already exists."""
    username = check_username(username)
    target = f"account {username}"
    found = execute(host, ["getent", "passwd", username], check=False, timeout_s=30)
    if found.ok:
        entry = found.stdout.strip().split(":")
        shown = f" (uid {entry[2]}, shell {entry[6]})" if len(entry) == 7 else ""
        return Change.unchanged(
            host.name, "create_app_account", target, f"{username} exists{shown}"
        )
    if found.exit_status != 2:  # getent: 2 means "no such key"
        raise CommandFailedError(host.name, found.command, found.exit_status, found.stderr)
    if dry_run:
        return Change.planned(host.name, "create_app_account", target, f"create {username}")
    execute(
        host,
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            NOLOGIN,
            "--comment",
            "opsflow application account",
            "--",
            username,
        ],
        timeout_s=60,
    )
    uid = execute(host, ["id", "-u", username], timeout_s=30).stdout.strip()
    return Change.made(host.name, "create_app_account", target, f"created {username} (uid {uid})")


@flow(name="create-app-account", flow_run_name="create-app-account-{username}-for-{service}")
def create_app_account(service: str, username: str, dry_run: bool = False) -> FulfillmentResult:
    """Create an application account on every host of a service; hosts that have it are left.

    Args:
        service: the service, as the estate names it.
        username: the account's name, a POSIX account name.
        dry_run: report which hosts would get the account and create nothing.
    """
    username = check_username(username)
    estate = read_estate()
    target = find_service(estate, service)
    outcomes = map_hosts(
        ensure_app_account,
        estate.hosts_of(target),
        limit=estate.settings.ssh_concurrency,
        username=username,
        dry_run=dry_run,
    )
    raise_failures(f"creating account {username} for {service}", outcomes)
    changes: list[Change] = [o.result for o in outcomes if o.result is not None]
    made = [c.host for c in changes if c.changed and c.host is not None]
    if dry_run:
        summary = f"dry run: account {username} for {service}: " + "; ".join(
            f"{c.host}: {c.detail}" for c in changes
        )
    else:
        summary = (
            f"account {username} for {service}: created on {len(made)} of {len(changes)} hosts"
            + (f" ({', '.join(made)})" if made else "; it existed everywhere")
        )
    return FulfillmentResult(summary=summary, changed=bool(made), dry_run=dry_run, hosts=changes)


if __name__ == "__main__":
    import sys

    create_app_account(sys.argv[1], sys.argv[2])
