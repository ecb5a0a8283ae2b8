"""rotate-logs: rotate services' live logs into compressed numbered files, so none grows forever.

The newest `keep` rotated files stay; a dry run reports the renames and deletions it would make.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from opsflow.flows.routine_ops import common
from opsflow.tasks.fanout import HostOutcome, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.log_rotation import LogRotation, rotate_log


@flow(name="rotate-logs")
def rotate_logs(
    estate_dir: str | None = None,
    services: list[str] | None = None,
    hosts: list[str] | None = None,
    keep: int = 7,
    min_size_kb: int = 0,
    dry_run: bool = False,
) -> list[LogRotation]:
    """Rotate each service's live log (`LOG_DIR/NAME.log`) into compressed numbered files.

    Args:
        estate_dir: Estate directory; default the configured one.
        services: Only these services; default every service with a `log_dir`.
        hosts: Only these hosts; default all of each service's.
        keep: Rotated files to keep (`NAME.log.1.gz` newest); older ones are deleted.
        min_size_kb: Leave logs smaller than this alone (an empty log is never rotated).
        dry_run: Report the renames and deletions it would make, and make none.
    """
    estate = read_estate(estate_dir)
    results: list[LogRotation] = []
    failures: list[HostOutcome[Any]] = []
    for service in common.services(estate, services):
        if not service.log_dir:
            continue
        done, failed = common.map_service_hosts(
            rotate_log,
            estate,
            service,
            hosts,
            keep=keep,
            min_size_bytes=max(1, min_size_kb * 1024),
            dry_run=dry_run,
        )
        results += done
        failures += failed
    common.publish_table(
        "rotate-logs",
        [
            {
                "host": r.host,
                "service": r.service,
                "log": r.target,
                "change": r.state,
                "rotated_kib": round(r.rotated_bytes / 1024, 1),
                "deleted": ", ".join(r.deleted),
                "rotated_files": len(r.rotated_files),
                "detail": r.detail,
            }
            for r in results
        ],
        failures,
        ("**Dry run: nothing rotated.** " if dry_run else "")
        + f"{sum(r.state != 'unchanged' for r in results)} of {len(results)} logs "
        f"{'would be ' if dry_run else ''}rotated, keeping {keep}.",
    )
    raise_failures("log rotation", failures)
    return results
