"""clean-disk: delete services' rotated logs by their log policy, so they do not fill the disks.

Never the live log; it reports per host what it deleted (made) or why nothing (unchanged), and
a dry run what would go (planned).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from opsflow.flows.routine_ops import common
from opsflow.tasks.fanout import HostOutcome, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.log_cleanup import CleanupPolicy, LogCleanup, clean_logs


@flow(name="clean-disk")
def clean_disk(
    estate_dir: str | None = None,
    services: list[str] | None = None,
    hosts: list[str] | None = None,
    dry_run: bool = False,
    pattern: str | None = None,
    older_than_days: float | None = None,
    max_total_mb: float | None = None,
    max_used_percent: int | None = None,
) -> list[LogCleanup]:
    """Delete services' rotated logs by policy (name, age, size, filesystem use); nothing else.

    Each rule defaults to the service's inventory `log_policy`: files matching `pattern`
    in its `log_dir` (never the live log, never subdirectories) go when older than
    `older_than_days`; then the oldest go while they total more than `max_total_mb` or the
    filesystem is at `max_used_percent` or more.

    Args:
        estate_dir: Estate directory; default the configured one.
        services: Only these services; default every service with a `log_dir`.
        hosts: Only these hosts; default all of each service's.
        dry_run: Report what would be deleted and delete nothing.
        pattern: `find -name` glob overriding the policy's.
        older_than_days: Age limit overriding the policy's `delete_after_days`.
        max_total_mb: Cap on the rotated logs' total size (none by default).
        max_used_percent: Filesystem use to get under, overriding the policy's.
    """
    estate = read_estate(estate_dir)
    results: list[LogCleanup] = []
    failures: list[HostOutcome[Any]] = []
    for service in common.services(estate, services):
        if not service.log_dir:
            continue
        policy = CleanupPolicy.for_service(
            service, pattern, older_than_days, max_total_mb, max_used_percent
        )
        done, failed = common.map_service_hosts(
            clean_logs, estate, service, hosts, policy=policy, dry_run=dry_run
        )
        results += done
        failures += failed
    changing = sum(r.state != "unchanged" for r in results)
    changed = "would change" if dry_run else "changed"
    freed = sum(r.freed_bytes for r in results)
    common.publish_table(
        "clean-disk",
        [
            {
                "host": r.host,
                "service": r.service,
                "directory": r.target,
                "change": r.state,
                "deleted": len(r.deleted),
                "freed_mib": round(r.freed_bytes / 2**20, 2),
                "used_before": r.used_percent_before,
                "used_after": r.used_percent_after,
                "detail": r.detail,
                "files": "; ".join(r.deleted)[:1000],
            }
            for r in results
        ],
        failures,
        ("**Dry run: nothing deleted.** " if dry_run else "")
        + f"{changing} of {len(results)} log directories {changed}; "
        f"{freed / 2**20:.1f} MiB {'would be ' if dry_run else ''}freed.",
    )
    raise_failures("disk clean-up", failures)
    return results
