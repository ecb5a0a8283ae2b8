"""backup-services: archive services' paths on their hosts, keep the newest, test a restore.

The restore test shows the archives can be restored; a service stopped for a consistent copy
is covered by a maintenance window over its hosts for the job's own duration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from opsflow.errors import PermanentError
from opsflow.flows.routine_ops import common
from opsflow.settings import get_settings
from opsflow.tasks.backups import (
    Backup,
    PathSizes,
    RestoreTest,
    Retention,
    apply_retention,
    measure_paths,
    take_backup,
    verify_restore,
)
from opsflow.tasks.fanout import HostOutcome, map_calls, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.maintenance import DEFAULT_GRACE_S, maintenance_window


def _restore_sample(backups: list[Backup], count: int, day: int) -> list[Backup]:
    """`count` backups to restore-test, starting at a place that moves on every day."""
    if not backups or count <= 0:
        return []
    start = day % len(backups)
    rotated = backups[start:] + backups[:start]
    return rotated[: min(count, len(backups))]


@flow(name="backup-services")
def backup_services(
    paths: dict[str, list[str]],
    estate_dir: str | None = None,
    hosts: list[str] | None = None,
    keep: int = 7,
    backup_dir: str | None = None,
    quiesce: bool = False,
    restore_tests: int = 1,
    window_minutes: float = 60.0,
    window_grace_s: float = DEFAULT_GRACE_S,
    dry_run: bool = False,
) -> list[Backup]:
    """Back up each service's paths on its hosts, keep the newest archives, test a restore.

    Args:
        paths: Absolute paths to back up, per service name, e.g. `{"app": ["/etc/app"]}`.
        estate_dir: Estate directory; default the configured one.
        hosts: Only these hosts; default all of each service's.
        keep: Archives to keep per service and host; older ones are deleted here.
        backup_dir: Where archives go; default `OPSFLOW_HOME/backups`.
        quiesce: Stop each running service for its archive (a consistent copy), start it
            right after; the job declares a maintenance window over those hosts meanwhile.
        restore_tests: How many of this run's archives to unpack and compare with the
            hosts' files (the choice moves on daily, so every host gets its turn).
        window_minutes: The longest the quiesced part may take: the window lapses then.
        window_grace_s: How long the window outlives the job, for late-stamped alerts.
        dry_run: Report the paths and their sizes; archive, stop and delete nothing.
    """
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    directory = backup_dir or str(get_settings().home / "backups")
    limit = estate.settings.ssh_concurrency
    try:
        plan = [(estate.service(name), service_paths) for name, service_paths in paths.items()]
    except KeyError as exc:
        raise PermanentError(f"backup paths: {exc}") from None
    if dry_run:
        sizes: list[PathSizes] = []
        failures: list[HostOutcome[Any]] = []
        for service, service_paths in plan:
            measured, failed = common.map_service_hosts(
                measure_paths, estate, service, hosts, paths=service_paths
            )
            sizes += measured
            failures += failed
        common.publish_table(
            "backup-services",
            [
                {"host": s.host, "service": s.service, "path": path, "kib": kib}
                for s in sizes
                for path, kib in s.kib.items()
            ],
            failures,
            f"**Dry run:** would archive {len(sizes)} service instances into "
            f"{directory}, keeping {keep} each"
            + (", stopping each service meanwhile." if quiesce else "."),
        )
        raise_failures("backup dry run", failures)
        return []

    backups: list[Backup] = []
    failures = []
    quiesced_hosts = [
        h.name
        for service, _ in plan
        if quiesce and service.control is not None
        for h in common.hosts_of(estate, service, hosts)
    ]
    with maintenance_window(
        quiesced_hosts,
        f"backup with {', '.join(paths)} stopped for a consistent copy",
        window_minutes,
        grace_s=window_grace_s,
        estate=estate,
    ):
        for service, service_paths in plan:
            taken, failed = common.map_service_hosts(
                take_backup,
                estate,
                service,
                hosts,
                paths=service_paths,
                directory=directory,
                quiesce=quiesce and service.control is not None,
            )
            backups += taken
            failures += failed
    retention: dict[tuple[str, str], Retention] = {}
    for backup in backups:
        folder = str(Path(directory) / backup.service / backup.host)
        retention[(backup.service, backup.host)] = apply_retention(folder, keep)
    sample = _restore_sample(backups, restore_tests, datetime.now(UTC).toordinal())
    tests: dict[str, RestoreTest] = {}
    restore_outcomes = map_calls(
        verify_restore, [(estate.host(b.host), {"backup": b}) for b in sample], limit
    )
    for backup, outcome in zip(sample, restore_outcomes, strict=True):
        if outcome.ok and outcome.result is not None:
            tests[backup.archive] = outcome.result
        else:
            failures.append(outcome)
    rows = []
    for b in backups:
        test = tests.get(b.archive)
        kept = retention[(b.service, b.host)]
        rows.append(
            {
                "host": b.host,
                "service": b.service,
                "archive": Path(b.archive).name,
                "size_kib": round(b.size / 1024, 1),
                "sha256": b.sha256[:16],
                "quiesced": b.quiesced,
                "downtime_s": b.downtime_s,
                "kept": len(kept.kept),
                "removed": len(kept.removed),
                "restore_test": ("passed" if test.passed else "FAILED") if test else "",
                "restore_detail": test.detail if test else "",
            }
        )
    failed_tests = [t for t in tests.values() if not t.passed]
    common.publish_table(
        "backup-services",
        rows,
        failures,
        f"{len(backups)} archives in {directory}, checksums verified; "
        f"{len(tests) - len(failed_tests)} of {len(tests)} restore tests passed.",
    )
    for test in failed_tests:
        logger.error("restore test of %s FAILED: %s", test.archive, test.detail)
    raise_failures("backup", failures)
    if failed_tests:
        raise PermanentError(
            "restore test failed: " + "; ".join(f"{t.archive}: {t.detail}" for t in failed_tests)
        )
    return backups
