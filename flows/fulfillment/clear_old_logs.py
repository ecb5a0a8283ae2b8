"""clear-old-logs: delete a service's rotated logs older than N days on every host it runs on."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from opsflow.flows.fulfillment import FulfillmentError, FulfillmentResult, find_service
from opsflow.inventory.models import Host, Service
from opsflow.tasks.change import Change
from opsflow.tasks.fanout import map_hosts, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.retry import is_transient
from opsflow.tasks.ssh import execute


def rotated_logs_find(service: Service, older_than_days: int) -> list[str]:
    """The `find` command matching the service's rotated logs at least `older_than_days` old."""
    if not service.log_dir:
        raise FulfillmentError(f"service: {service.name} has no log_dir in the inventory")
    return [
        "find",
        service.log_dir,
        "-maxdepth",
        "1",
        "-type",
        "f",
        "-name",
        service.log_policy.pattern,
        "-mtime",
        f"+{older_than_days - 1}",
    ]


@task(
    cache_policy=NONE,
    retries=2,  # idempotent: a second pass finds nothing left to delete
    retry_delay_seconds=[1, 3],
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient,
    timeout_seconds=300,
    task_run_name="clear_old_logs[{service.name}@{host.name}]",
)
def clear_rotated_logs(host: Host, service: Service, older_than_days: int, dry_run: bool) -> Change:
    """Delete (or, in a dry run, list) the rotated logs past the age; the live log never matches."""
    find = rotated_logs_find(service, older_than_days)
    action = ["-print"] if dry_run else ["-print", "-delete"]
    files = execute(host, [*find, *action], timeout_s=240).stdout.split()
    target = f"rotated logs of {service.name}"
    if not files:
        why = f"no rotated logs older than {older_than_days} days"
        return Change.unchanged(host.name, "clear_old_logs", target, why)
    names = f"{len(files)}: " + ", ".join(f.rsplit("/", 1)[-1] for f in files)[:1000]
    if dry_run:
        return Change.planned(host.name, "clear_old_logs", target, f"delete {names}")
    return Change.made(host.name, "clear_old_logs", target, f"deleted {names}")


@flow(name="clear-old-logs", flow_run_name="clear-old-logs-{service}")
def clear_old_logs(
    service: str, older_than_days: int | None = None, dry_run: bool = False
) -> FulfillmentResult:
    """Delete the service's rotated logs older than N days on all its hosts.

    Args:
        service: the service, as the estate names it.
        older_than_days: the age in days; default the service's `log_policy.delete_after_days`.
        dry_run: list what would be deleted and delete nothing.
    """
    estate = read_estate()
    target = find_service(estate, service)
    days = older_than_days or target.log_policy.delete_after_days
    if days < 1:
        raise FulfillmentError(f"older_than_days: must be at least 1, not {days}")
    rotated_logs_find(target, days)  # refuse a service without log_dir before touching hosts
    outcomes = map_hosts(
        clear_rotated_logs,
        estate.hosts_of(target),
        limit=estate.settings.ssh_concurrency,
        service=target,
        older_than_days=days,
        dry_run=dry_run,
    )
    raise_failures(f"clearing old logs of {service}", outcomes)
    changes: list[Change] = [o.result for o in outcomes if o.result is not None]
    touched = [c for c in changes if c.state != "unchanged"]
    verb = "would clear" if dry_run else "cleared"
    return FulfillmentResult(
        summary=f"{verb} rotated logs of {service} older than {days} days on "
        f"{len(touched)} of {len(changes)} hosts"
        + "".join(f"; {c.host}: {c.detail}" for c in touched),
        changed=any(c.changed for c in changes),
        dry_run=dry_run,
        hosts=changes,
    )


if __name__ == "__main__":
    import sys

    clear_old_logs(sys.argv[1])
