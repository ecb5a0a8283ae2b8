"""Keep a service's log directory in bounds: delete rotated logs as its policy says.

`clean_logs` reads the directory's state on the host, decides here (`plan_cleanup`), then
deletes only what the decision names, in the same call; a dry run stops after deciding and
reports the plan.
"""

from __future__ import annotations

import math
import time
from functools import partial

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.tasks.change import Change
from opsflow.tasks.logs import changing_slot
from opsflow.tasks.ssh import execute

DAY_S = 86400.0
SEPARATOR = "--opsflow-logs--"
INUMS_PER_COMMAND = 200


class CleanupPolicy(BaseModel):
    """Which files of one log directory may go: name, age, total size and filesystem use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$")
    pattern: str = Field(pattern=r"^[A-Za-z0-9*?._-]+$", description="find -name glob.")
    live_log: str = Field(
        pattern=r"^[A-Za-z0-9._-]+$", description="The live log's name: never deleted."
    )
    older_than_days: float | None = Field(
        default=None, gt=0, description="Matching files older than this go."
    )
    max_total_mb: float | None = Field(
        default=None, ge=0, description="Oldest matching files go until the rest fit in this."
    )
    max_used_percent: int | None = Field(
        default=None, ge=1, le=100, description="Oldest matching files go until the fs is below."
    )

    @classmethod
    def for_service(
        cls,
        service: Service,
        pattern: str | None = None,
        older_than_days: float | None = None,
        max_total_mb: float | None = None,
        max_used_percent: int | None = None,
    ) -> CleanupPolicy:
        """The service's inventory log policy, with any of its rules overridden."""
        if not service.log_dir:
            raise PermanentError(f"service {service.name} has no log_dir in the inventory")
        policy = service.log_policy
        return cls(
            directory=service.log_dir,
            pattern=pattern or policy.pattern,
            live_log=f"{service.name}.log",
            older_than_days=older_than_days or policy.delete_after_days,
            max_total_mb=max_total_mb,
            max_used_percent=max_used_percent or policy.max_used_percent,
        )


class LogFile(BaseModel):
    """A file of the log directory that matches the policy's pattern."""

    name: str
    inode: int
    mtime: float
    size: int = Field(description="Apparent size in bytes.")
    kb: int = Field(description="Space it takes on disk, in KiB.")


class Filesystem(BaseModel):
    """Size and use of the filesystem holding the log directory, in KiB."""

    size_kb: int
    used_kb: int

    @property
    def used_percent(self) -> float:
        """Percentage used, as `df` rounds it (up)."""
        return math.ceil(100 * self.used_kb / self.size_kb) if self.size_kb else 0.0


class Doomed(BaseModel):
    """A file the policy removes, and the rule that removes it."""

    file: LogFile
    reason: str


def plan_cleanup(
    files: list[LogFile], fs: Filesystem, policy: CleanupPolicy, now: float
) -> list[Doomed]:
    """Decide which files go: too old first, then oldest until size and use limits hold."""
    doomed: list[Doomed] = []
    remaining = sorted(files, key=lambda f: (f.mtime, f.name))
    if policy.older_than_days is not None:
        limit_s = policy.older_than_days * DAY_S
        old = [f for f in remaining if now - f.mtime > limit_s]
        doomed += [
            Doomed(file=f, reason=f"older than {policy.older_than_days:g} days") for f in old
        ]
        remaining = [f for f in remaining if f not in old]
    if policy.max_total_mb is not None:
        limit_bytes = policy.max_total_mb * 2**20
        while remaining and sum(f.size for f in remaining) > limit_bytes:
            doomed.append(
                Doomed(
                    file=remaining.pop(0), reason=f"rotated logs over {policy.max_total_mb:g} MB"
                )
            )
    if policy.max_used_percent is not None and fs.size_kb:
        used = fs.used_kb - sum(d.file.kb for d in doomed)
        while remaining and 100 * used / fs.size_kb >= policy.max_used_percent:
            victim = remaining.pop(0)
            used -= victim.kb
            doomed.append(
                Doomed(file=victim, reason=f"filesystem at or over {policy.max_used_percent}%")
            )
    return doomed


def parse_listing(output: str) -> tuple[Filesystem, list[LogFile]]:
    """Turn the listing script's output (a `df -P -k` line, then `find -printf`) into data."""
    df, _, listing = output.partition(SEPARATOR)
    fields = df.split()
    fs = Filesystem(size_kb=int(fields[1]), used_kb=int(fields[2]))
    files = []
    for line in listing.strip().splitlines():
        parts = line.split(" ", 4)
        if len(parts) != 5 or not parts[0].isdigit():
            continue  # a file name holding a newline: never ours to guess at
        inode, mtime, size, kb, name = parts
        files.append(
            LogFile(name=name, inode=int(inode), mtime=float(mtime), size=int(size), kb=int(kb))
        )
    return fs, files


_LIST_SCRIPT = f"""set -eu
dir=$1 pattern=$2 live=$3
[ -d "$dir" ] || {{ echo absent; exit 0; }}
df -P -k -- "$dir" | tail -n 1
echo {SEPARATOR}
find "$dir" -maxdepth 1 -type f -name "$pattern" ! -name "$live" -printf '%i %T@ %s %k %f\\n'
"""


class LogCleanup(Change):
    """What clean-up did (or, in a dry run, would do) in one service's log directory."""

    service: str
    deleted: list[str] = Field(description="Names removed (or to remove), with the rule.")
    freed_bytes: int = Field(description="Bytes freed (or, planned, that would be).")
    kept: int = Field(description="Matching files the policy keeps.")
    used_percent_before: float | None
    used_percent_after: float | None = Field(description="Measured after; projected if planned.")


def _read_directory(host: Host, policy: CleanupPolicy) -> tuple[Filesystem, list[LogFile]] | None:
    """The filesystem use and the matching files of the directory; None if it is absent."""
    listing = execute(
        host,
        ["sh", "-c", _LIST_SCRIPT, "sh", policy.directory, policy.pattern, policy.live_log],
        timeout_s=60,
    )
    return None if listing.stdout.strip() == "absent" else parse_listing(listing.stdout)


def _delete(host: Host, policy: CleanupPolicy, doomed: list[Doomed]) -> set[str]:
    """Delete the doomed files by inode and name; return the names actually deleted.

    By inode as well as name: a file renamed since the listing is still the one decided
    on, and a new file that took a doomed name is not.
    """
    gone: set[str] = set()
    for start in range(0, len(doomed), INUMS_PER_COMMAND):
        inums: list[str] = []
        for d in doomed[start : start + INUMS_PER_COMMAND]:
            inums += ["-o", "-inum", str(d.file.inode)]
        select = ["-maxdepth", "1", "-type", "f", "-name", policy.pattern]
        select += ["!", "-name", policy.live_log, "(", *inums[1:], ")"]
        result = execute(
            host,
            ["find", policy.directory, *select, "-printf", "%f\\n", "-delete"],
            timeout_s=120,
        )
        gone |= set(result.stdout.splitlines())
    return gone


@task(
    cache_policy=NONE,
    timeout_seconds=300,
    task_run_name="clean_logs[{service.name}@{host.name}]",
)
def clean_logs(
    host: Host, service: Service, policy: CleanupPolicy, dry_run: bool = False
) -> LogCleanup:
    """Delete the rotated logs `policy` names, and nothing else; not retried (it deletes)."""
    with changing_slot(host, dry_run):
        found = _read_directory(host, policy)
        if found is None:
            return LogCleanup.unchanged(
                host.name,
                "clean_logs",
                policy.directory,
                f"{policy.directory} does not exist",
                service=service.name,
                deleted=[],
                freed_bytes=0,
                kept=0,
                used_percent_before=None,
                used_percent_after=None,
            )
        fs, files = found
        doomed = plan_cleanup(files, fs, policy, time.time())
        if dry_run or not doomed:
            removed = doomed
            after: float | None = Filesystem(
                size_kb=fs.size_kb, used_kb=fs.used_kb - sum(d.file.kb for d in doomed)
            ).used_percent
        else:
            gone = _delete(host, policy, doomed)
            removed = [d for d in doomed if d.file.name in gone]
            measured = _read_directory(host, policy)
            after = measured[0].used_percent if measured else None
    freed = sum(d.file.size for d in removed)
    counts = f"{len(removed)} of {len(files)} matching files, {freed / 2**20:.1f} MiB"
    if not removed:
        report = partial(
            LogCleanup.unchanged,
            why=f"none of {len(files)} files matching {policy.pattern!r} is due",
        )
    elif dry_run:
        report = partial(LogCleanup.planned, what=f"delete {counts}")
    else:
        report = partial(LogCleanup.made, what=f"deleted {counts}")
    change = report(
        host.name,
        "clean_logs",
        policy.directory,
        service=service.name,
        deleted=[f"{d.file.name} ({d.reason})" for d in removed],
        freed_bytes=freed,
        kept=len(files) - len(removed),
        used_percent_before=fs.used_percent,
        used_percent_after=after,
    )
    get_run_logger().info("%s: %s: %s", host.name, policy.directory, change.detail)
    return change
