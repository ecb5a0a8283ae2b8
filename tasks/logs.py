"""Acting in services' log directories without being led astray, and reading a live log.

Log directories are often writable by the service's own user, who could plant a link there
to root's files: `in_log_dir` runs a command in one as someone who gains nothing from such a
link, or refuses. Cleaning rotated logs by policy is `tasks.log_cleanup`, rotating the live
log `tasks.log_rotation`; both run through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.tasks.concurrency import host_slot
from opsflow.tasks.ssh import execute

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


def refusal(host: Host, path: str, stderr: str) -> UnsafeLogPathError:
    return UnsafeLogPathError(f"{host.name}: {path}: refused: {stderr.strip()[-500:]}")


@contextmanager
def changing_slot(host: Host, dry_run: bool) -> Iterator[None]:
    """The host's concurrency slot while a log task changes it; none for a dry run."""
    with nullcontext() if dry_run else host_slot(host.name):
        yield


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
