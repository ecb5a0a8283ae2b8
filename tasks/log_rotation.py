"""Rotate a service's live log: compress it away, keep the configured count, in one call.

`rotate_log` reads the log's state on the host and acts in the same script, run through
`in_log_dir`; a dry run reports what it would do.
"""

from __future__ import annotations

from functools import partial

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.tasks.change import Change
from opsflow.tasks.logs import ABSENT_EXIT, UNSAFE_EXIT, changing_slot, in_log_dir, refusal
from opsflow.tasks.ssh import execute

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
    with changing_slot(host, dry_run):
        result = execute(
            host,
            in_log_dir(service.log_dir, [*script, "1" if dry_run else "0"]),
            timeout_s=540,
            check=False,
        )
    if result.exit_status == UNSAFE_EXIT:
        raise refusal(host, log, result.stderr)
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
