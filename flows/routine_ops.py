"""IT Operations Management's routine jobs, and Technical Management's view of the estate.

Health checks and certificate expiry report what they find as events into the desk's
intake, so triage turns them into incidents by the same rules as any monitor. Fact
gathering keeps a history per host and reports drift from the inventory. Disk clean-up,
log rotation and backups change hosts: each reports changed or unchanged per host and
supports a dry run; a job that stops a service declares a maintenance window over its hosts
for its own duration. Each job publishes a table artifact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import Estate, Host, Service
from opsflow.itsm.drift import Drift, find_drift
from opsflow.itsm.facts_store import FactsSnapshot
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
from opsflow.tasks.certificates import (
    Certificate,
    CertificateFile,
    TlsEndpoint,
    classify_expiry,
    read_certificate_file,
    read_endpoint_certificate,
)
from opsflow.tasks.desk_intake import (
    DESK_TOKEN_BLOCK,
    DeskEvent,
    clearing_events,
    read_open_incidents,
    send_events,
)
from opsflow.tasks.facts import HostFacts, read_host_facts
from opsflow.tasks.facts_history import record_facts_history
from opsflow.tasks.fanout import HostOutcome, map_calls, map_hosts, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.logs import CleanupPolicy, CleanupResult, RotationResult, clean_logs, rotate_log
from opsflow.tasks.maintenance import DEFAULT_GRACE_S, maintenance_window
from opsflow.tasks.packages import PatchStatus, read_upgradable_packages
from opsflow.tasks.records import current_flow_run_id
from opsflow.tasks.service_control import ServiceStates, read_service_states
from opsflow.tasks.services import HealthResult, check_service_health

HEALTH_SOURCE = "opsflow-health-check"
HEALTH_SYMPTOMS = ("service-down", "service-hung")
CERT_SOURCE = "opsflow-certificates"
CERT_SYMPTOM = "certificate-expiring"


# --- selection ---------------------------------------------------------------------------


def _services(estate: Estate, names: list[str] | None) -> list[Service]:
    """The named services (all when `names` is None); unknown names are an error."""
    if names is None:
        return list(estate.services)
    try:
        return [estate.service(n) for n in names]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None


def _hosts_of(estate: Estate, service: Service, only: list[str] | None) -> list[Host]:
    """The service's hosts, limited to `only` when given."""
    hosts = estate.hosts_of(service)
    return hosts if only is None else [h for h in hosts if h.name in only]


def _hosts(estate: Estate, only: list[str] | None) -> list[Host]:
    """The estate's hosts, limited to `only` when given; unknown names are an error."""
    if only is None:
        return list(estate.hosts)
    try:
        return [estate.host(n) for n in only]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None


def _failure_rows(outcomes: list[HostOutcome[Any]], **extra: Any) -> list[dict[str, Any]]:
    return [
        {"host": o.host.name, **extra, "error": str(o.error)[:300]} for o in outcomes if not o.ok
    ]


# --- health checks -----------------------------------------------------------------------


def health_event(result: HealthResult, at: datetime) -> DeskEvent:
    """The event a health check result becomes: firing when unhealthy, for clearing when not."""
    symptom = "service-hung" if "no answer within" in result.detail else "service-down"
    return DeskEvent(
        source=HEALTH_SOURCE,
        status="firing",
        fingerprint=f"health-check/{result.service}/{result.host}/{symptom}",
        host=result.host,
        service=result.service,
        severity="critical",
        summary=f"{result.service} on {result.host} failed its health check: {result.detail}",
        labels={"alertname": "HealthCheckFailed", "symptom": symptom, "check": "health-check"},
        occurred_at=at,
    )


def _clear_candidates(result: HealthResult, at: datetime) -> list[DeskEvent]:
    base = health_event(result, at)
    return [
        base.model_copy(
            update={
                "fingerprint": f"health-check/{result.service}/{result.host}/{symptom}",
                "labels": {**base.labels, "symptom": symptom},
                "summary": f"{result.service} on {result.host} passes its health check again",
            }
        )
        for symptom in HEALTH_SYMPTOMS
    ]


def report_findings(
    firing: list[DeskEvent],
    cleared: list[DeskEvent],
    symptoms: list[str],
    desk_url: str | None,
    token_block: str,
) -> tuple[int, int]:
    """Send firing findings to the desk, then all-clears for those an open incident waits for.

    A firing finding that cannot be delivered fails the run; an all-clear that cannot is
    only logged, as the incident's own restoration or a person closes it anyway. Returns
    how many new events the desk stored and how many all-clears were delivered.
    """
    stored = 0
    if firing:
        stored = send_events(firing, desk_url=desk_url, token_block=token_block).stored
    if not cleared:
        return stored, 0
    # A warning alone (a certificate with weeks left) does not hold an incident open.
    critical = [e for e in firing if e.severity == "critical"]
    resolved = clearing_events(read_open_incidents(symptoms), cleared, still_firing=critical)
    if not resolved:
        return stored, 0
    try:
        send_events(resolved, desk_url=desk_url, token_block=token_block)
    except OpsError as exc:
        get_run_logger().warning("%d all-clears not delivered: %s", len(resolved), exc)
        return stored, 0
    return stored, len(resolved)


@flow(name="health-check", log_prints=False)
def health_check(
    estate_dir: str | None = None,
    hosts: list[str] | None = None,
    send_to_desk: bool = True,
    desk_url: str | None = None,
    desk_token_block: str = DESK_TOKEN_BLOCK,
) -> list[HealthResult]:
    """Check every service on every host it runs on; failures become events at the desk.

    Args:
        estate_dir: Estate directory; default the configured one.
        hosts: Only these hosts; default all.
        send_to_desk: Post failures (and recoveries an open incident waits for) to the
            desk's event intake, where triage opens incidents by the estate's rules.
        desk_url: The desk; default `OPSFLOW_DESK_URL`.
        desk_token_block: Secret block holding the desk token jobs post events with.
    """
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    results: list[HealthResult] = []
    for service in estate.services:
        outcomes = map_hosts(
            check_service_health,
            _hosts_of(estate, service, hosts),
            limit=estate.settings.ssh_concurrency,
            service=service,
        )
        raise_failures(f"health check of {service.name}", outcomes)
        results += [o.result for o in outcomes]
    observed = datetime.now(UTC)
    failing = [r for r in results if not r.healthy]
    create_table_artifact(
        key="health-check",
        table=[r.model_dump() for r in results],
        description=(
            f"**{len(results) - len(failing)} of {len(results)} healthy.**"
            + (" Failures are reported to the desk as events." if send_to_desk else "")
            + "".join(f"\n- {r.service} on {r.host}: {r.detail}" for r in failing)
        ),
    )
    for result in failing:
        logger.warning("UNHEALTHY %s on %s: %s", result.service, result.host, result.detail)
    logger.info("%d of %d service instances healthy", len(results) - len(failing), len(results))
    if send_to_desk:
        stored, cleared = report_findings(
            [health_event(r, observed) for r in failing],
            [e for r in results if r.healthy for e in _clear_candidates(r, observed)],
            list(HEALTH_SYMPTOMS),
            desk_url,
            desk_token_block,
        )
        logger.info("desk stored %d new failure events; %d all-clears sent", stored, cleared)
    return results


# --- facts and drift ---------------------------------------------------------------------


def _facts_row(f: HostFacts, states: dict[str, str]) -> dict[str, Any]:
    return {
        "host": f.host,
        "os": f.os,
        "kernel": f.kernel,
        "uptime_h": round(f.uptime_s / 3600, 1),
        "load_1m": f.load[0],
        "mem_used_percent": round(100 * (1 - f.mem_available_kb / f.mem_total_kb), 1)
        if f.mem_total_kb
        else None,
        "fullest_disk": max(f.disks, key=lambda d: d.used_percent).mount if f.disks else None,
        "fullest_disk_percent": max((d.used_percent for d in f.disks), default=None),
        "services": ", ".join(f"{n}: {s}" for n, s in sorted(states.items())),
    }


def drift_markdown(drift: list[Drift], hosts: int) -> str:
    """The drift report as a markdown table, or a line saying there is none."""
    if not drift:
        return f"**No drift:** all {hosts} hosts answered and run what the inventory says.\n"
    lines = [
        f"**{len(drift)} differences** between the inventory and the facts of {hosts} hosts.\n",
        "| host | drift | service | detail |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {d.host} | {d.kind} | {d.service or ''} | {d.detail.replace('|', '/')[:200]} |"
        for d in drift
    ]
    return "\n".join(lines) + "\n"


@flow(name="gather-facts")
def gather_facts(estate_dir: str | None = None, keep_days: float = 90.0) -> list[HostFacts]:
    """Gather every host's facts and services' states, keep them as history, report drift.

    Args:
        estate_dir: Estate directory; default the configured one.
        keep_days: Facts history older than this is pruned.
    """
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    limit = estate.settings.ssh_concurrency
    outcomes = map_hosts(read_host_facts, estate.hosts, limit=limit)
    placement = {
        h.name: [s for s in estate.services if h in estate.hosts_of(s)] for h in estate.hosts
    }
    reachable = [o.host for o in outcomes if o.ok]
    state_outcomes = map_calls(
        read_service_states, [(h, {"services": placement[h.name]}) for h in reachable], limit
    )
    states: dict[str, ServiceStates] = {o.host.name: o.result for o in state_outcomes if o.ok}
    gathered_at = datetime.now(UTC)
    run_id = current_flow_run_id()
    snapshots = []
    for outcome in outcomes:
        name = outcome.host.name
        host_states = states.get(name)
        snapshots.append(
            FactsSnapshot(
                host=name,
                gathered_at=gathered_at,
                reachable=outcome.ok,
                facts=outcome.result.model_dump() if outcome.ok else None,
                services=dict(host_states.states) if host_states else {},
                error=None if outcome.ok else str(outcome.error)[:2000],
                flow_run_id=run_id,
            )
        )
    written = record_facts_history(snapshots, keep_days)
    facts = [o.result for o in outcomes if o.ok]
    create_table_artifact(
        key="host-facts",
        table=[_facts_row(f, states[f.host].states if f.host in states else {}) for f in facts]
        + [{"host": o.host.name, "os": f"unreachable: {o.error}"} for o in outcomes if not o.ok],
        description=f"Facts from {len(facts)} of {len(outcomes)} hosts; "
        f"{written.recorded} snapshots kept as history ({written.pruned} old ones pruned).",
    )
    drift = find_drift(estate, snapshots)
    create_markdown_artifact(
        key="inventory-drift",
        markdown=drift_markdown(drift, len(estate.hosts)),
        description="Drift between the inventory and the facts gathered by this run.",
    )
    for item in drift:
        logger.warning("DRIFT %s %s %s: %s", item.host, item.kind, item.service or "", item.detail)
    raise_failures("fact gathering", outcomes)
    raise_failures("service states", state_outcomes)
    return facts


# --- disk clean-up and log rotation ------------------------------------------------------


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
) -> list[CleanupResult]:
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
    results: list[CleanupResult] = []
    failures: list[HostOutcome[Any]] = []
    for service in _services(estate, services):
        if not service.log_dir:
            continue
        policy = CleanupPolicy.for_service(
            service, pattern, older_than_days, max_total_mb, max_used_percent
        )
        outcomes = map_hosts(
            clean_logs,
            _hosts_of(estate, service, hosts),
            limit=estate.settings.ssh_concurrency,
            service=service,
            policy=policy,
            dry_run=dry_run,
        )
        results += [o.result for o in outcomes if o.ok]
        failures += [o for o in outcomes if not o.ok]
    changed = sum(r.changed for r in results)
    freed = sum(r.freed_bytes for r in results)
    create_table_artifact(
        key="clean-disk",
        table=[
            {
                "host": r.host,
                "service": r.service,
                "directory": r.directory,
                "changed": r.changed,
                "deleted": len(r.deleted),
                "freed_mib": round(r.freed_bytes / 2**20, 2),
                "used_before": r.used_percent_before,
                "used_after": r.used_percent_after,
                "detail": r.detail,
                "files": "; ".join(r.deleted)[:1000],
            }
            for r in results
        ]
        + _failure_rows(failures),
        description=("**Dry run: nothing deleted.** " if dry_run else "")
        + f"{changed} of {len(results)} log directories changed; "
        f"{freed / 2**20:.1f} MiB {'would be ' if dry_run else ''}freed.",
    )
    raise_failures("disk clean-up", failures)
    return results


@flow(name="rotate-logs")
def rotate_logs(
    estate_dir: str | None = None,
    services: list[str] | None = None,
    hosts: list[str] | None = None,
    keep: int = 7,
    min_size_kb: int = 0,
    dry_run: bool = False,
) -> list[RotationResult]:
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
    results: list[RotationResult] = []
    failures: list[HostOutcome[Any]] = []
    for service in _services(estate, services):
        if not service.log_dir:
            continue
        outcomes = map_hosts(
            rotate_log,
            _hosts_of(estate, service, hosts),
            limit=estate.settings.ssh_concurrency,
            service=service,
            keep=keep,
            min_size_bytes=max(1, min_size_kb * 1024),
            dry_run=dry_run,
        )
        results += [o.result for o in outcomes if o.ok]
        failures += [o for o in outcomes if not o.ok]
    create_table_artifact(
        key="rotate-logs",
        table=[
            {
                "host": r.host,
                "service": r.service,
                "log": r.log,
                "changed": r.changed,
                "action": r.action,
                "rotated_kib": round(r.rotated_bytes / 1024, 1),
                "deleted": ", ".join(r.deleted),
                "rotated_files": len(r.rotated_files),
                "detail": r.detail,
            }
            for r in results
        ]
        + _failure_rows(failures),
        description=("**Dry run: nothing rotated.** " if dry_run else "")
        + f"{sum(r.action == 'rotated' for r in results)} of {len(results)} logs "
        f"{'would be ' if dry_run else ''}rotated, keeping {keep}.",
    )
    raise_failures("log rotation", failures)
    return results


# --- backups -----------------------------------------------------------------------------


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
            outcomes = map_hosts(
                measure_paths,
                _hosts_of(estate, service, hosts),
                limit=limit,
                service=service,
                paths=service_paths,
            )
            sizes += [o.result for o in outcomes if o.ok]
            failures += [o for o in outcomes if not o.ok]
        create_table_artifact(
            key="backup-services",
            table=[
                {"host": s.host, "service": s.service, "path": path, "kib": kib}
                for s in sizes
                for path, kib in s.kib.items()
            ]
            + _failure_rows(failures),
            description=f"**Dry run:** would archive {len(sizes)} service instances into "
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
        for h in _hosts_of(estate, service, hosts)
    ]
    with maintenance_window(
        quiesced_hosts,
        f"backup with {', '.join(paths)} stopped for a consistent copy",
        window_minutes,
        grace_s=window_grace_s,
    ):
        for service, service_paths in plan:
            outcomes = map_hosts(
                take_backup,
                _hosts_of(estate, service, hosts),
                limit=limit,
                service=service,
                paths=service_paths,
                directory=directory,
                quiesce=quiesce and service.control is not None,
            )
            backups += [o.result for o in outcomes if o.ok]
            failures += [o for o in outcomes if not o.ok]
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
        if outcome.ok:
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
    create_table_artifact(
        key="backup-services",
        table=rows + _failure_rows(failures),
        description=f"{len(backups)} archives in {directory}, checksums verified; "
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


# --- certificates ------------------------------------------------------------------------


def certificate_event(
    cert: Certificate, days_left: float, severity: Literal["warning", "critical"], at: datetime
) -> DeskEvent:
    """The event a certificate finding becomes (`severity` warning or critical)."""
    when = (
        f"expired {-days_left:.1f} days ago"
        if days_left < 0
        else f"expires in {days_left:.1f} days"
    )
    return DeskEvent(
        source=CERT_SOURCE,
        fingerprint=f"certificate/{cert.host}/{cert.target}"[:128],
        host=cert.host,
        service=cert.service,
        severity=severity,
        summary=f"certificate {cert.subject} ({cert.target}) on {cert.host} {when}, "
        f"at {cert.not_after:%Y-%m-%d %H:%M} UTC",
        labels={
            "alertname": "CertificateExpiry",
            "symptom": CERT_SYMPTOM,
            "target": cert.target,
            "subject": cert.subject,
            "not_after": cert.not_after.isoformat(),
            "days_left": f"{days_left:.1f}",
        },
        occurred_at=at,
    )


@flow(name="check-certificates")
def check_certificates(
    endpoints: list[TlsEndpoint] | None = None,
    files: list[CertificateFile] | None = None,
    estate_dir: str | None = None,
    warn_days: float = 30.0,
    critical_days: float = 7.0,
    send_to_desk: bool = True,
    desk_url: str | None = None,
    desk_token_block: str = DESK_TOKEN_BLOCK,
) -> list[dict[str, Any]]:
    """Read when services' TLS certificates and certificate files expire; report to the desk.

    A certificate within `warn_days` is sent as a warning event, within `critical_days`
    (or expired) as a critical one, which triage turns into an incident; one renewed while
    its incident is open is sent as resolved.

    Args:
        endpoints: TLS ports to read, each naming an inventory host and its service.
        files: Certificate files (PEM or DER) on inventory hosts.
        estate_dir: Estate directory; default the configured one.
        warn_days: Days left at or under which a certificate is a warning.
        critical_days: Days left at or under which it is an exception (an incident).
        send_to_desk: Post the findings to the desk's event intake.
        desk_url: The desk; default `OPSFLOW_DESK_URL`.
        desk_token_block: Secret block holding the desk token jobs post events with.
    """
    estate = read_estate(estate_dir)
    limit = estate.settings.ssh_concurrency
    try:
        calls = [(estate.host(e.host), {"endpoint": e}) for e in endpoints or []]
        file_calls = [(estate.host(f.host), {"cert_file": f}) for f in files or []]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None
    outcomes = map_calls(read_endpoint_certificate, calls, limit)
    outcomes += map_calls(read_certificate_file, file_calls, limit)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    firing: list[DeskEvent] = []
    cleared: list[DeskEvent] = []
    for outcome in outcomes:
        if not outcome.ok:
            continue
        cert: Certificate = outcome.result
        days = cert.days_left(now)
        verdict = classify_expiry(days, warn_days, critical_days)
        severity: Literal["warning", "critical"] = (
            "critical" if verdict == "exception" else "warning"
        )
        event = certificate_event(cert, days, severity, now)
        (cleared if verdict == "ok" else firing).append(event)
        rows.append(
            {
                "host": cert.host,
                "service": cert.service or "",
                "target": cert.target,
                "subject": cert.subject,
                "not_after": f"{cert.not_after:%Y-%m-%d %H:%M}",
                "days_left": round(days, 1),
                "class": verdict,
            }
        )
    counts = {c: sum(r["class"] == c for r in rows) for c in ("exception", "warning", "ok")}
    create_table_artifact(
        key="check-certificates",
        table=sorted(rows, key=lambda r: r["days_left"]) + _failure_rows(outcomes),
        description=f"{len(rows)} certificates: {counts['exception']} expire within "
        f"{critical_days:g} days (incidents), {counts['warning']} within {warn_days:g} days "
        f"(warnings), {counts['ok']} fine"
        + (
            f"; {len(outcomes) - len(rows)} could not be read."
            if len(rows) < len(outcomes)
            else "."
        )
        + (" Findings are reported to the desk as events." if send_to_desk else ""),
    )
    if send_to_desk:
        report_findings(firing, cleared, [CERT_SYMPTOM], desk_url, desk_token_block)
    raise_failures("certificate check", outcomes)
    return rows


# --- patches -----------------------------------------------------------------------------


def patch_markdown(statuses: list[PatchStatus]) -> str:
    """The patch report: per host, the upgradable packages (security first), or none."""
    lines = ["# Patch report", ""]
    for status in statuses:
        age = f" (package lists {status.lists_age_h:g} h old)" if status.lists_age_h else ""
        if not status.packages:
            lines += [f"## {status.host}: none{age}", ""]
            continue
        lines += [
            f"## {status.host}: {len(status.packages)} upgradable, "
            f"{len(status.security)} security{age}",
            "",
            "| package | installed | candidate | suite |",
            "|---|---|---|---|",
        ]
        ordered = sorted(status.packages, key=lambda p: (not p.security, p.name))
        lines += [
            f"| {'**' + p.name + '**' if p.security else p.name} | {p.current} | {p.candidate} "
            f"| {', '.join(p.suites)} |"
            for p in ordered
        ]
        lines.append("")
    return "\n".join(lines)


@flow(name="patch-report")
def patch_report(
    estate_dir: str | None = None, hosts: list[str] | None = None
) -> list[PatchStatus]:
    """List each host's upgradable packages (security ones first), or say there are none.

    Args:
        estate_dir: Estate directory; default the configured one.
        hosts: Only these hosts; default all.
    """
    estate = read_estate(estate_dir)
    outcomes = map_hosts(
        read_upgradable_packages, _hosts(estate, hosts), limit=estate.settings.ssh_concurrency
    )
    statuses = [o.result for o in outcomes if o.ok]
    create_table_artifact(
        key="patch-report",
        table=[
            {
                "host": s.host,
                "upgradable": len(s.packages),
                "security": len(s.security),
                "packages": ", ".join(p.name for p in s.packages)[:1000] or "none",
                "lists_age_h": s.lists_age_h,
            }
            for s in statuses
        ]
        + _failure_rows(outcomes),
        description=f"{sum(bool(s.packages) for s in statuses)} of {len(statuses)} hosts "
        f"have upgrades ({sum(len(s.security) for s in statuses)} security).",
    )
    create_markdown_artifact(
        key="patch-report-detail", markdown=patch_markdown(statuses), description="Per host."
    )
    raise_failures("patch report", outcomes)
    return statuses


if __name__ == "__main__":
    health_check()
