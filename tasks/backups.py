"""Back up services' files: archive on the host, fetch and verify, keep a few, prove one restores.

An archive is made on the host (optionally with the service stopped for a consistent copy),
copied here over SFTP with its SHA-256 checked against the host's, and removed from the
host. Retention keeps the newest archives per service and host. The restore test unpacks an
archive and compares every file with the host's copy, byte for byte by checksum.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import AwareDatetime, BaseModel, Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.tasks.change import Change
from opsflow.tasks.concurrency import host_slot
from opsflow.tasks.files import fetch_file
from opsflow.tasks.retry import RETRY_TRANSIENT, is_transient
from opsflow.tasks.service_control import start_service, stop_service
from opsflow.tasks.ssh import execute

ARCHIVE_SUFFIX = ".tar.gz"
CHUNK = 1 << 20

_ARCHIVE_SCRIPT = """set -eu
out=$(mktemp /var/tmp/opsflow-backup.XXXXXXXXXX)
date +%s.%N
echo "$out"
rc=0
tar -czf "$out" -C / -- "$@" || rc=$?
# tar exits 1 when a file changed while it was read: the archive is still whole.
if [ "$rc" -gt 1 ]; then rm -f -- "$out"; exit "$rc"; fi
"""

MANIFEST_MAX_BYTES = 64 << 20
"""A manifest larger than this fails the backup's verification rather than being cut short."""

_MANIFEST_SCRIPT = """find "$@" -type f -exec sha256sum -- {} + 2>/dev/null
echo --opsflow-times--
find "$@" -type f -printf '%T@ %p\\n' 2>/dev/null
exit 0
"""


def _relative(paths: list[str]) -> list[str]:
    """Paths as tar stores them under `-C /`, refusing anything that is not plainly absolute."""
    out = []
    for path in paths:
        pure = PurePosixPath(path)
        if not pure.is_absolute() or ".." in pure.parts or pure == PurePosixPath("/"):
            raise PermanentError(f"backup path {path!r} must be absolute, not / and without '..'")
        out.append(str(pure.relative_to("/")))
    return out


def sha256_of(path: Path) -> str:
    """The SHA-256 of a local file."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Backup(Change):
    """One archive of a service's paths on one host, fetched here and verified (always made)."""

    host: str
    service: str
    paths: list[str]
    archive: str = Field(description="Local path of the archive.")
    size: int
    sha256: str
    started_at: AwareDatetime = Field(description="When the host began archiving.")
    quiesced: bool = Field(description="Whether the service was stopped for the archive.")
    downtime_s: float = Field(description="How long the service was stopped, 0 if never.")


class PathSizes(BaseModel):
    """What a backup would take (a dry run): each path's size on the host."""

    host: str
    service: str
    kib: dict[str, int]


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="measure_paths[{service.name}@{host.name}]",
)
def measure_paths(host: Host, service: Service, paths: list[str]) -> PathSizes:
    """How big each backup path is on the host (`du -sk`); reads only."""
    _relative(paths)
    result = execute(host, ["du", "-s", "-k", "--", *paths], timeout_s=90)
    sizes = {}
    for line in result.stdout.splitlines():
        kib, _, path = line.partition("\t")
        sizes[path] = int(kib)
    return PathSizes(host=host.name, service=service.name, kib=sizes)


def _archive_name(service: str, host: str, at: datetime) -> str:
    return f"{service}-{host}-{at:%Y%m%dT%H%M%S.%fZ}{ARCHIVE_SUFFIX}"


@task(
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=[3],
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient,
    timeout_seconds=3600,
    task_run_name="take_backup[{service.name}@{host.name}]",
)
def take_backup(
    host: Host,
    service: Service,
    paths: list[str],
    directory: str,
    quiesce: bool = False,
) -> Backup:
    """Archive `paths` on the host, fetch the archive here verified by checksum, remove it there.

    With `quiesce`, a running service is stopped for the archive and started again right
    after (before the copy), inside the host's concurrency slot; the flow declares the
    maintenance window. Retried once on transient errors: each attempt is a new archive.
    """
    logger = get_run_logger()
    relative = _relative(paths)
    target_dir = Path(directory) / service.name / host.name
    with host_slot(host.name):
        stopped_at = None
        if quiesce and stop_service.fn(host, service).changed:
            stopped_at = time.monotonic()
        try:
            made = execute(host, ["sh", "-c", _ARCHIVE_SCRIPT, "sh", *relative], timeout_s=3000)
        finally:
            downtime = 0.0
            if stopped_at is not None:
                start_service.fn(host, service)
                downtime = time.monotonic() - stopped_at
    started_line, remote = made.stdout.split()[:2]
    started_at = datetime.fromtimestamp(float(started_line), UTC)
    final = target_dir / _archive_name(service.name, host.name, started_at)
    partial = final.with_name(final.name + ".part")
    try:
        fetched = fetch_file.fn(host, remote, partial)
    finally:
        execute(host, ["rm", "-f", "--", remote], timeout_s=60, check=False)
    partial.replace(final)
    final.with_name(final.name + ".sha256").write_text(f"{fetched.sha256}  {final.name}\n")
    change = Backup.made(
        host.name,
        "take_backup",
        ", ".join(paths),
        f"archived {fetched.size} bytes of {service.name} (sha256 {fetched.sha256[:12]}…)"
        + (f", service down {downtime:.2f}s" if stopped_at is not None else ""),
        service=service.name,
        paths=paths,
        archive=str(final),
        size=fetched.size,
        sha256=fetched.sha256,
        started_at=started_at,
        quiesced=stopped_at is not None,
        downtime_s=round(downtime, 3),
    )
    logger.info("%s: %s", host.name, change.detail)
    return change


class Retention(Change):
    """What retention removed (or, planned, would remove) from one folder of archives here."""

    removed: list[str]
    kept: list[str]


@task(cache_policy=NONE, timeout_seconds=300, task_run_name="apply_retention[{directory}]")
def apply_retention(directory: str, keep: int, dry_run: bool = False) -> Retention:
    """Delete all but the newest `keep` archives in `directory` (names sort by time)."""
    if keep < 1:
        raise PermanentError(f"keep must be at least 1, not {keep}")
    folder = Path(directory)
    archives = sorted(folder.glob(f"*{ARCHIVE_SUFFIX}")) if folder.is_dir() else []
    doomed, kept = archives[:-keep], archives[-keep:]
    for path in [] if dry_run else doomed:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    names = {"removed": [p.name for p in doomed], "kept": [p.name for p in kept]}
    if not doomed:
        return Retention.unchanged(
            None, "apply_retention", directory, f"{len(kept)} archive(s), keep {keep}", **names
        )
    what = f"{len(doomed)} of {len(archives)} archives, keeping the newest {len(kept)}"
    if dry_run:
        return Retention.planned(None, "apply_retention", directory, f"remove {what}", **names)
    return Retention.made(None, "apply_retention", directory, f"removed {what}", **names)


class RestoreTest(BaseModel):
    """Whether an archive unpacks and holds what the host holds."""

    host: str
    service: str
    archive: str
    files: int
    matched: int
    changed_since_backup: list[str] = Field(description="Differ, but modified after the backup.")
    gone_since_backup: list[str] = Field(description="In the archive, no longer on the host.")
    differ: list[str] = Field(description="Differ though unmodified since: the archive is wrong.")
    passed: bool
    detail: str


def _unpack(archive: Path, into: Path) -> dict[str, str]:
    """Unpack the regular files of `archive` under `into`; return `/path` → SHA-256."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tar.extractall(into, members=members, filter="data")
    return {"/" + m.name.lstrip("/"): sha256_of(into / m.name) for m in members}


def read_manifest(host: Host, paths: list[str]) -> dict[str, tuple[str, float]]:
    """The host's files under `paths`: `/path` → (SHA-256, mtime), read whole."""
    result = execute(
        host,
        ["sh", "-c", _MANIFEST_SCRIPT, "sh", *paths],
        timeout_s=600,
        max_output_bytes=MANIFEST_MAX_BYTES,
    )
    sums, _, times = result.stdout.partition("--opsflow-times--\n")
    mtimes = {}
    for line in times.splitlines():
        stamp, _, path = line.partition(" ")
        mtimes[path] = float(stamp)
    manifest = {}
    for line in sums.splitlines():
        if line.startswith("\\"):
            continue  # sha256sum escapes names holding a newline or backslash: skip them
        digest, _, path = line.partition("  ")
        manifest[path] = (digest, mtimes.get(path, 0.0))
    return manifest


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=1800,
    task_run_name="verify_restore[{host.name}]",
)
def verify_restore(host: Host, backup: Backup) -> RestoreTest:
    """Unpack the archive here and compare each file with the host's current copy."""
    archive = Path(backup.archive)
    if sha256_of(archive) != backup.sha256:
        raise PermanentError(f"{archive}: checksum no longer matches the one verified at fetch")
    with tempfile.TemporaryDirectory(prefix="opsflow-restore-") as scratch:
        workdir = Path(scratch)
        try:
            restored = _unpack(archive, workdir / "restore")
        except (tarfile.TarError, OSError) as exc:
            raise PermanentError(f"{archive}: does not unpack: {exc}") from None
        on_host = read_manifest(host, backup.paths)
    matched, changed, gone, differ = 0, [], [], []
    since = backup.started_at.timestamp()
    for path, digest in sorted(restored.items()):
        if path not in on_host:
            gone.append(path)
        elif on_host[path][0] == digest:
            matched += 1
        elif on_host[path][1] >= since:
            changed.append(path)
        else:
            differ.append(path)
    passed = not differ and bool(restored)
    detail = (
        f"{matched} of {len(restored)} files identical on {host.name}"
        + (f", {len(changed)} changed since" if changed else "")
        + (f", {len(gone)} gone since" if gone else "")
        + (f", {len(differ)} DIFFER" if differ else "")
        + ("" if restored else ": the archive holds no files")
    )
    return RestoreTest(
        host=host.name,
        service=backup.service,
        archive=Path(backup.archive).name,
        files=len(restored),
        matched=matched,
        changed_since_backup=changed,
        gone_since_backup=gone,
        differ=differ,
        passed=passed,
        detail=detail,
    )
