"""A service's releases on one host: which one is in place, putting another in place, restarting
into it, and rolling back (whether it then serves is `tasks.health_gate`'s to say).

Releases live side by side on the host, in `/var/lib/<service>/releases/<version>`; the link
`/var/lib/<service>/current` names the one in place, and the service's start command runs
what it names. Putting a release in place switches that link atomically (a new link renamed
over it with `mv -T`), after checking in the same command that it still names what was read.
The scripts run as root only when nobody else can write the service's directory or any above
it (otherwise as the directory's owner), and refuse a `releases` directory others can write
and links where directories belong: a link planted there cannot make root act elsewhere.
Versions are checked before anything reaches a host.

Each changing task returns a `ReleaseChange`, a `Change` with the release it leaves in place:
unchanged (and why), planned (a dry run) or made.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.inventory.types import ReleaseVersion
from opsflow.tasks.change import Change
from opsflow.tasks.logs import ABSENT_EXIT, UNSAFE_EXIT, in_log_dir
from opsflow.tasks.retry import RETRY_TRANSIENT
from opsflow.tasks.run_logging import run_logger
from opsflow.tasks.service_control import (
    CONTROL_TIMEOUT_S,
    control_of,
    start_service,
    stop_service,
)
from opsflow.tasks.ssh import CommandResult, execute

RELEASES_BASE = PurePosixPath("/var/lib")
"""Each service's releases are under `RELEASES_BASE/<service name>` on its hosts."""

NO_RELEASE_EXIT = 88
"""Exit status of the switch script when the release to put in place is not on the host."""
MOVED_EXIT = 89
"""Exit status of the switch script when `current` no longer names what was read, or another
release step holds the service's directory locked."""
LOCK_WAIT_S = 10
"""How long a release script waits for another one on the same service and host to finish."""

_TIMEOUT_S = 30.0
_VERSION: TypeAdapter[str] = TypeAdapter(ReleaseVersion)


class InvalidVersionError(PermanentError, ValueError):
    """A version is not a release version; nothing was sent to any host."""


class UnsafeReleasePathError(PermanentError):
    """The service's release directory was refused: acting there could reach other files."""


class ReleaseMissingError(PermanentError):
    """The release asked for is not on the host."""


class ReleaseMovedError(PermanentError):
    """`current` names another release than the one the step was to act on."""


def valid_version(value: str, field: str = "version") -> str:
    """`value` if it is a release version; else InvalidVersionError naming `field` and why."""
    try:
        return _VERSION.validate_python(value)
    except ValidationError:
        raise InvalidVersionError(
            f"{field} {value!r} is not a release version: use letters, digits, '.', '+', '_' "
            "and '-', starting with a letter or digit, at most 64 characters"
        ) from None


def release_root(service: Service) -> PurePosixPath:
    """Where the service keeps its releases and its `current` link on each of its hosts."""
    return RELEASES_BASE / service.name


class ReleaseState(BaseModel):
    """Which release of a service is in place on one host, and which releases it keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    service: str
    current: str | None = Field(description="The version `current` names; None if no release.")
    link: str | None = Field(description="What `current` names, as read; None if there is none.")
    releases: list[str] = Field(description="The versions the host keeps, sorted.")
    links: list[str] = Field(
        default_factory=list,
        description="Names in releases/ that are symbolic links: never taken for releases.",
    )


class ReleaseChange(Change):
    """What one release step did, or would do in a dry run, on one host."""

    host: str
    service: str
    version: str = Field(description="The release in place after the step (or, planned, then).")
    previous: str | None = Field(
        default=None, description="The release `current` named before the step, if any."
    )


_CHECK_RELEASES = f"""
refuse() {{ printf '%s\\n' "$*" >&2; exit {UNSAFE_EXIT}; }}
cd -- "$root"
exec 9<.
if ! flock -w {LOCK_WAIT_S} 9; then
    printf '%s: another release step held its lock for %ss\\n' "$root" {LOCK_WAIT_S} >&2
    exit {MOVED_EXIT}
fi
[ -L releases ] && refuse "$root/releases is a symbolic link"
if [ -d releases ]; then
    info=$(stat -c '%u:%a' -- releases)
    owner=${{info%%:*}} mode=${{info##*:}}
    if [ "$owner" -ne 0 ] && [ "$owner" -ne "$(id -u)" ]; then
        refuse "$root/releases belongs to uid $owner"
    fi
    if [ $((0$mode & 022)) -ne 0 ]; then
        refuse "$root/releases is writable by others than its owner (mode $mode)"
    fi
fi
if [ -L current ]; then
    link=$(readlink -- current)
elif [ -e current ]; then
    refuse "$root/current is not a symbolic link"
else
    link=
fi
"""
"""Shared start of the scripts: into the service's directory (already checked by `in_log_dir`),
hold its lock (so no two release steps interleave a read and a switch), refuse an unsafe
`releases` and a `current` that is not a link, and read what it names."""

_READ_SCRIPT = f"""set -eu
root=$1
{_CHECK_RELEASES}
printf '%s\\0' "$link"
[ -d releases ] || exit 0
find releases -mindepth 1 -maxdepth 1 \\( -type d -o -type l \\) -printf '%y%f\\0'
"""
"""NUL-framed: what `current` names (empty if nothing), then each directory (`d`) and link (`l`)
in releases/ by type and name; no file name holds a NUL, so none can pass for another field."""

_SWITCH_SCRIPT = f"""set -eu
root=$1 version=$2 expect=$3
{_CHECK_RELEASES}
release=releases/$version
[ -L "$release" ] && refuse "$root/$release is a symbolic link"
if [ ! -d "$release" ]; then
    printf 'no release %s\\n' "$root/$release" >&2
    exit {NO_RELEASE_EXIT}
fi
if [ "$link" != "$expect" ]; then
    printf '%s now names %s\\n' "$root/current" "${{link:-nothing}}" >&2
    exit {MOVED_EXIT}
fi
new=.current.$$
rm -f -- "$new"
ln -s -- "$release" "$new"
mv -T -- "$new" current
"""
"""Point `current` at releases/$2 if it still names $3: a new link renamed over the old one,
so the service sees one or the other, never none."""


def _version_of(root: PurePosixPath, link: str) -> str | None:
    """The version a `current` link names, or None when it names no release of `root`."""
    for prefix in ("releases/", f"{root}/releases/"):
        if link.startswith(prefix):
            try:
                return _VERSION.validate_python(link.removeprefix(prefix))
            except ValidationError:
                return None
    return None


def parse_release_state(host: str, service: Service, output: str) -> ReleaseState:
    """The `ReleaseState` in the read script's output; release names that are not versions
    are left out."""
    fields = output.split("\0")
    if len(fields) < 2 or fields[-1]:
        raise PermanentError(f"{host}: {service.name}: unexpected release listing")
    link, entries = fields[0], fields[1:-1]
    found: dict[str, list[str]] = {"d": [], "l": []}
    for entry in entries:
        kind, name = entry[:1], entry[1:]
        try:
            found[kind].append(_VERSION.validate_python(name))
        except (KeyError, ValidationError):
            continue
    return ReleaseState(
        host=host,
        service=service.name,
        current=_version_of(release_root(service), link) if link else None,
        link=link or None,
        releases=sorted(found["d"]),
        links=sorted(found["l"]),
    )


def _run_guarded(host: Host, service: Service, script: str, *args: str) -> CommandResult:
    """Run a release script in the service's directory; refusals become errors that say why."""
    root = str(release_root(service))
    argv = in_log_dir(root, ["sh", "-c", script, "sh", root, *args])
    result = execute(host, argv, timeout_s=_TIMEOUT_S, check=False)
    where = f"{host.name}: {service.name}"
    if result.exit_status == UNSAFE_EXIT:
        raise UnsafeReleasePathError(f"{where}: refused: {result.stderr.strip()[-500:]}")
    if result.exit_status == ABSENT_EXIT:
        raise ReleaseMissingError(f"{where}: no release directory {root}")
    if result.exit_status == NO_RELEASE_EXIT:
        raise ReleaseMissingError(f"{where}: {result.stderr.strip()[-500:]}")
    if result.exit_status == MOVED_EXIT:
        raise ReleaseMovedError(
            f"{where}: changed by someone else meanwhile: {result.stderr.strip()[-500:]}"
        )
    if not result.ok:
        raise PermanentError(
            f"{where}: release script exited {result.exit_status}: {result.stderr.strip()[-500:]}"
        )
    return result


def _switch(
    host: Host,
    service: Service,
    state: ReleaseState,
    version: str,
    action: Literal["put_release", "roll_back_release"],
    dry_run: bool,
) -> ReleaseChange:
    """Point `current` at `version` unless it already names it; `state` is what was just read."""
    target = f"{release_root(service)}/current"
    change = {"service": service.name, "version": version}
    if state.current == version:
        return ReleaseChange.unchanged(
            host.name,
            action,
            target,
            f"current already names {version}",
            previous=version,
            **change,
        )
    if version in state.links:
        raise UnsafeReleasePathError(
            f"{host.name}: {service.name}: refused: {release_root(service)}/releases/{version} "
            "is a symbolic link"
        )
    if version not in state.releases:
        kept = ", ".join(state.releases) or "none"
        raise ReleaseMissingError(
            f"{host.name}: {service.name}: no release {version} in "
            f"{release_root(service)}/releases (the host keeps: {kept})"
        )
    before = state.current or state.link or "nothing"
    if dry_run:
        return ReleaseChange.planned(
            host.name,
            action,
            target,
            f"point current from {before} to {version}",
            previous=state.current,
            **change,
        )
    _run_guarded(host, service, _SWITCH_SCRIPT, version, state.link or "")
    run_logger(__name__).info("%s: %s: current %s -> %s", host.name, service.name, before, version)
    return ReleaseChange.made(
        host.name,
        action,
        target,
        f"current pointed from {before} to {version}",
        previous=state.current,
        **change,
    )


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="read_release[{service.name}@{host.name}]",
)
def read_release(host: Host, service: Service) -> ReleaseState:
    """Which release `current` names on the host and which releases it keeps (reads only, so
    safe to retry)."""
    result = _run_guarded(host, service, _READ_SCRIPT)
    return parse_release_state(host.name, service, result.stdout)


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="put_release[{service.name}@{host.name}]",
)
def put_release(host: Host, service: Service, version: str, dry_run: bool = False) -> ReleaseChange:
    """Put a release of the service in place on the host: point `current` at it.

    Unchanged when `current` already names it. The service keeps running what it ran until
    it is restarted (`restart_release`). Safe to retry: a second run finds it in place.

    Args:
        host: The host, from the inventory.
        service: The service, from the inventory.
        version: The release to put in place; it must already be on the host.
        dry_run: Say what would change, and change nothing.
    """
    version = valid_version(version)
    return _switch(host, service, read_release.fn(host, service), version, "put_release", dry_run)


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=120,
    task_run_name="roll_back_release[{service.name}@{host.name}]",
)
def roll_back_release(
    host: Host, service: Service, from_version: str, to_version: str, dry_run: bool = False
) -> ReleaseChange:
    """Put back the release `current` named before `from_version` was put in place.

    Unchanged when `current` already names `to_version`; refused (`ReleaseMovedError`) when
    it names neither, since then someone else has put another release there since. Restart
    the service afterwards, as after any put. Safe to retry.

    Args:
        host: The host, from the inventory.
        service: The service, from the inventory.
        from_version: The release being undone (the put's `version`).
        to_version: The release to go back to (the put's `previous`).
        dry_run: Say what would change, and change nothing.
    """
    from_version = valid_version(from_version, "from_version")
    to_version = valid_version(to_version, "to_version")
    state = read_release.fn(host, service)
    if state.current not in (from_version, to_version):
        raise ReleaseMovedError(
            f"{host.name}: {service.name}: current names {state.current or state.link!r}, "
            f"neither {from_version} (to roll back) nor {to_version}: not rolled back"
        )
    return _switch(host, service, state, to_version, "roll_back_release", dry_run)


@task(
    cache_policy=NONE,
    retries=0,  # a restart is not idempotent: a second one interrupts the service again
    timeout_seconds=2 * CONTROL_TIMEOUT_S + 60,
    task_run_name="restart_release[{service.name}@{host.name}]",
)
def restart_release(host: Host, service: Service) -> ReleaseChange:
    """Restart the service with the estate's control commands, so it runs the release in place.

    Uses the service's restart command, else stop then start. Raises `CommandFailedError`
    when the service does not start; whether it is healthy is the health gate's to say.
    """
    state = read_release.fn(host, service)
    commands = control_of(service)
    if commands.restart is not None:
        said = execute(host, commands.restart, timeout_s=CONTROL_TIMEOUT_S).stdout
    else:
        said = "; ".join(
            r.detail for r in (stop_service.fn(host, service), start_service.fn(host, service))
        )
    version = state.current or state.link or "no release"
    run_logger(__name__).info("%s: %s restarted on %s", host.name, service.name, version)
    return ReleaseChange.made(
        host.name,
        "restart_release",
        f"service {service.name}",
        f"restarted on {version}: {' '.join(said.split())[-300:]}",
        service=service.name,
        version=version,
    )
