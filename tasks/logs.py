"""Keep services' log directories in bounds: clean rotated logs by policy, rotate the live log.

Each task reads the directory's state on the host, decides here, then changes only what the
decision names, in the same call; a dry run stops after deciding and reports the plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.tasks.change import Change
from opsflow.tasks.concurrency import host_slot
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


@contextmanager
def _slot(host: Host, dry_run: bool) -> Iterator[None]:
    with nullcontext() if dry_run else host_slot(host.name):
        yield


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
    with _slot(host, dry_run):
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
            after = Filesystem(
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


UNSAFE_EXIT = 86
"""Exit status of a host script that refused a path someone other than root could subvert."""
ABSENT_EXIT = 87
"""Exit status of `in_log_dir` when the log directory does not exist."""

_IN_LOG_DIR = f"""set -eu
dir=$1; shift
refuse() {{ printf '%s\\n' "$*" >&2; exit {UNSAFE_EXIT}; }}
[ -L "$dir" ] && refuse "$dir is a symbolic link"
[ -d "$dir" ] || exit {ABSENT_EXIT}
real=$(realpath -e -- "$dir")
[ "$real" = "$dir" ] || refuse "$dir is reached through a symbolic link (it is $real)"
info=$(stat -c '%u:%g:%a' -- "$dir")
actor=${{info%%:*}} mode=${{info##*:}} group=${{info#*:}} group=${{group%%:*}}
if [ $((0$mode & 02)) -ne 0 ] || {{ [ $((0$mode & 020)) -ne 0 ] && [ "$group" -ne 0 ]; }}; then
    refuse "$dir is writable by others than its owner (mode $mode)"
fi
# Whoever can write a directory above could swap the log directory for a link.
p=$dir
while [ "$p" != / ]; do
    p=$(dirname -- "$p")
    info=$(stat -c '%u:%a' -- "$p")
    owner=${{info%%:*}} pmode=${{info##*:}}
    if [ "$owner" -ne 0 ] && [ "$owner" -ne "$actor" ]; then
        refuse "$p, above $dir, belongs to uid $owner"
    fi
    if [ $((0$pmode & 022)) -ne 0 ] && [ $((0$pmode & 01000)) -eq 0 ]; then
        refuse "$p, above $dir, is writable by others than its owner (mode $pmode)"
    fi
done
[ "$actor" -eq 0 ] && exec "$@"
if entry=$(getent passwd "$actor"); then
    exec setpriv --reuid="$actor" --regid="$(printf '%s' "$entry" | cut -d: -f4)" \\
        --init-groups -- "$@"
fi
exec setpriv --reuid="$actor" --regid="$group" --clear-groups -- "$@"
"""


def in_log_dir(directory: str, argv: list[str]) -> list[str]:
    """`argv` run in `directory` as someone who gains nothing from links planted there.

    That is root when only root can write the directory and every directory above it, and
    otherwise the directory's owner: whatever a link there points at, the command reaches
    only what that owner could reach anyway. A directory others can write too, or one
    reached through a link, is refused with exit `UNSAFE_EXIT` and the reason on stderr; a
    missing one exits `ABSENT_EXIT`.
    """
    return ["sh", "-c", _IN_LOG_DIR, "sh", directory, *argv]


class UnsafeLogPathError(PermanentError):
    """A log path was refused: acting on it could reach files its owner cannot."""


def _refusal(host: Host, path: str, stderr: str) -> UnsafeLogPathError:
    return UnsafeLogPathError(f"{host.name}: {path}: refused: {stderr.strip()[-500:]}")


_ROTATE_SCRIPT = f"""set -eu
log=$1 keep=$2 min_size=$3 dry=$4
refuse() {{ printf '%s\\n' "$*" >&2; exit {UNSAFE_EXIT}; }}
[ -L "$log" ] && refuse "$log is a symbolic link"
if [ ! -e "$log" ]; then echo "skip no live log $log"; exit 0; fi
[ -f "$log" ] || refuse "$log is not a regular file"
[ "$(stat -c %h -- "$log")" -eq 1 ] || refuse "$log has other hard links"
for f in "$log".[0-9]*; do
    if [ -L "$f" ]; then refuse "$f is a symbolic link"; fi
    if [ -e "$f" ] && [ ! -f "$f" ]; then refuse "$f is not a regular file"; fi
done
size=$(stat -c %s -- "$log")
if [ "$size" -eq 0 ] || [ "$size" -lt "$min_size" ]; then
    echo "skip $size bytes, under the $min_size-byte minimum or empty"
else
    echo "rotate $size"
    for f in "$log".[0-9]*; do
        [ -e "$f" ] || continue
        n=${{f#"$log".}}; n=${{n%.gz}}
        case $n in '' | *[!0-9]*) continue ;; esac
        if [ "$n" -ge "$keep" ]; then
            echo "delete $f"
            [ "$dry" = 1 ] || rm -f -- "$f"
        fi
    done
    if [ "$dry" != 1 ]; then
        # Compress first: if the disk is too full for it, nothing has moved yet. mktemp
        # makes a new file only this identity can read until it has the log's owner and mode.
        tmp=$(mktemp -- "$log.opsflow-XXXXXX")
        trap 'rm -f -- "$tmp"' EXIT
        gzip -c -- "$log" > "$tmp"
        chown --reference="$log" -- "$tmp" 2>/dev/null ||
            refuse "cannot give the archive the owner of $log (uid $(stat -c %u -- "$log"))"
        chmod --reference="$log" -- "$tmp"
    fi
    n=$((keep - 1))
    while [ "$n" -ge 1 ]; do
        for ext in "" .gz; do
            if [ -e "$log.$n$ext" ]; then
                echo "move $log.$n$ext $log.$((n + 1))$ext"
                [ "$dry" = 1 ] || mv -f -- "$log.$n$ext" "$log.$((n + 1))$ext"
            fi
        done
        n=$((n - 1))
    done
    echo "new $log.1.gz"
    if [ "$dry" != 1 ]; then
        mv -f -- "$tmp" "$log.1.gz"
        trap - EXIT
        # copytruncate: the service keeps its open file and writes on at the new end.
        : > "$log"
    fi
fi
for f in "$log".[0-9]*; do
    [ -e "$f" ] && echo "kept $f"
done
exit 0
"""


class LogRotation(Change):
    """What rotating one service's live log did (or, in a dry run, would do)."""

    service: str
    rotated_bytes: int
    deleted: list[str]
    steps: list[str] = Field(description="Renames done (or, planned, to do).")
    rotated_files: list[str] = Field(description="Rotated files present after the run.")


def parse_rotation(output: str) -> tuple[str, int, list[str], list[str], list[str]]:
    """Read the rotation script's report: (status line, bytes, deleted, moves, kept)."""
    status, size = "", 0
    deleted: list[str] = []
    moves: list[str] = []
    kept: list[str] = []
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("skip", "rotate"):
            status = line
            if word == "rotate":
                size = int(rest)
        elif word == "delete":
            deleted.append(rest)
        elif word in ("move", "new"):
            moves.append(line)
        elif word == "kept":
            kept.append(rest)
    return status, size, deleted, moves, kept


@task(
    cache_policy=NONE,
    timeout_seconds=600,
    task_run_name="rotate_log[{service.name}@{host.name}]",
)
def rotate_log(
    host: Host,
    service: Service,
    keep: int,
    min_size_bytes: int = 1,
    dry_run: bool = False,
) -> LogRotation:
    """Rotate the service's live log into `NAME.log.1.gz`, keeping `keep` rotated files.

    The live log is compressed into place, then truncated (copytruncate), because the
    service keeps writing to its open file; a line written in between may be lost. An empty
    (or smaller than `min_size_bytes`) log is left alone, so a second run changes nothing.
    Not retried: a rotation interrupted midway is finished by the next run, not redone.
    """
    if keep < 1:
        raise PermanentError(f"keep must be at least 1, not {keep}")
    if not service.log_dir:
        raise PermanentError(f"service {service.name} has no log_dir in the inventory")
    log = f"{service.log_dir}/{service.name}.log"
    script = ["sh", "-c", _ROTATE_SCRIPT, "sh", log, str(keep), str(max(min_size_bytes, 1))]
    with _slot(host, dry_run):
        result = execute(
            host,
            in_log_dir(service.log_dir, [*script, "1" if dry_run else "0"]),
            timeout_s=540,
            check=False,
        )
    if result.exit_status == UNSAFE_EXIT:
        raise _refusal(host, log, result.stderr)
    if result.exit_status == ABSENT_EXIT:
        status, size, deleted, moves, kept = parse_rotation(f"skip no log directory {log}")
    elif not result.ok:
        raise PermanentError(
            f"{host.name}: rotating {log} failed: exit {result.exit_status}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    else:
        status, size, deleted, moves, kept = parse_rotation(result.stdout)
    rotated = status.startswith("rotate")
    if rotated and dry_run:
        report = partial(
            LogRotation.planned,
            what=f"rotate {size} bytes, delete {len(deleted)}, then keep {keep}",
        )
    elif rotated:
        report = partial(
            LogRotation.made,
            what=f"rotated {size} bytes into {log}.1.gz; {len(kept)} rotated files kept",
        )
    else:
        report = partial(LogRotation.unchanged, why=status.removeprefix("skip "))
    change = report(
        host.name,
        "rotate_log",
        log,
        service=service.name,
        rotated_bytes=size if rotated else 0,
        deleted=deleted,
        steps=moves,
        rotated_files=sorted(kept, key=_rotation_index),
    )
    get_run_logger().info("%s: %s: %s", host.name, log, change.detail)
    return change


def _rotation_index(path: str) -> tuple[int, str]:
    suffix = path.rsplit(".log.", 1)[-1].removesuffix(".gz")
    return (int(suffix) if suffix.isdigit() else 10**9, path)


_TAIL_SCRIPT = f"""set -eu
[ -L "$1" ] && {{ printf '%s is a symbolic link\\n' "$1" >&2; exit {UNSAFE_EXIT}; }}
[ -e "$1" ] || exit 0
[ -f "$1" ] || {{ printf '%s is not a regular file\\n' "$1" >&2; exit {UNSAFE_EXIT}; }}
exec tail -n "$2" -- "$1"
"""


def read_log_tail(host: Host, service: Service, lines: int = 20) -> str:
    """The last `lines` lines of the service's live log, or why they were not read.

    Read with `in_log_dir`'s identity and never through a link, so a link planted in the log
    directory cannot show root's files in an incident's worklog.
    """
    if not service.log_dir:
        return ""
    log = f"{service.log_dir}/{service.name}.log"
    result = execute(
        host,
        in_log_dir(service.log_dir, ["sh", "-c", _TAIL_SCRIPT, "sh", log, str(lines)]),
        check=False,
    )
    if result.exit_status == UNSAFE_EXIT:
        return f"not read: {result.stderr.strip()[-500:]}"
    if result.exit_status == ABSENT_EXIT:
        return f"not read: no directory {service.log_dir}"
    return (result.stdout or result.stderr)[-2000:]
