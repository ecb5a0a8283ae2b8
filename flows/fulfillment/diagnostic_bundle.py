"""diagnostic-bundle: tar a host's logs, config, processes and disks; fetch it, checksummed."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from prefect import flow, task
from prefect.cache_policies import NONE

from opsflow.flows.fulfillment import FulfillmentError, FulfillmentResult
from opsflow.inventory.models import Host
from opsflow.itsm.requests import Attachment
from opsflow.settings import get_settings
from opsflow.tasks.change import Change
from opsflow.tasks.files import fetch_file
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.retry import is_transient
from opsflow.tasks.ssh import execute

BUNDLE_PATHS = ("/var/log/app", "/etc/app")
"""What a bundle holds besides ps, df and uname output; paths missing on a host are skipped."""

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/_.-]+$")
_ARCHIVE = re.compile(r"^/tmp/opsflow-bundle\.[0-9a-f]{32}\.tar\.gz$")

# Runs on the host as `sh -c SCRIPT sh ARCHIVE PATH...`: the archive's (random) name and
# the paths arrive as arguments, never as shell text. The scratch directory is removed
# whatever happens; the archive is readable by root only.
_BUNDLE_SCRIPT = r"""
set -eu
umask 077
archive=$1
shift
if [ -e "$archive" ] || [ -L "$archive" ]; then
    echo "$archive exists already; refusing to overwrite it" >&2
    exit 1
fi
work=$(mktemp -d /tmp/opsflow-bundle-work.XXXXXX)
trap 'rm -rf "$work"' EXIT
ps -eo pid,ppid,user,stat,etime,rss,args >"$work/ps.txt" 2>&1 || true
df -P >"$work/df.txt" 2>&1 || true
uname -a >"$work/uname.txt" 2>&1 || true
count=$#
for path in "$@"; do
    if [ -e "$path" ]; then set -- "$@" "${path#/}"; fi
done
shift "$count"
# Exit 1 from GNU tar means a file changed while it was read (a live log): still a bundle.
tar --warning=no-file-changed -czf "$archive" -C "$work" ps.txt df.txt uname.txt -C / "$@" \
    || [ "$?" -eq 1 ]
"""


@task(
    cache_policy=NONE,
    retries=0,  # a retry would find its own half-written archive and refuse to overwrite it
    timeout_seconds=300,
    task_run_name="create_bundle[{host.name}]",
)
def create_bundle(host: Host, archive: str, paths: list[str]) -> Change:
    """Write a compressed tar of `paths` plus ps, df and uname output to `archive` on the host."""
    if not _ARCHIVE.match(archive):
        raise FulfillmentError(f"archive: {archive!r} is not an opsflow bundle path")
    for path in paths:
        if not _SAFE_PATH.match(path):
            raise FulfillmentError(f"paths: {path!r} is not a plain absolute path")
    execute(host, ["sh", "-c", _BUNDLE_SCRIPT, "sh", archive, *paths], timeout_s=240)
    what = f"wrote {archive} with {', '.join(paths)}, ps, df and uname"
    return Change.made(host.name, "create_bundle", archive, what)


@task(
    cache_policy=NONE,
    retries=2,  # idempotent: removing a removed file changes nothing
    retry_delay_seconds=[1, 3],
    retry_condition_fn=is_transient,
    timeout_seconds=60,
    task_run_name="remove_remote_file[{host.name}:{path}]",
)
def remove_remote_file(host: Host, path: str) -> Change:
    """Remove the bundle from the host's /tmp unless it is gone already."""
    if not _ARCHIVE.match(path):
        raise FulfillmentError(f"{host.name}: refusing to remove {path!r}, not a bundle")
    if not execute(host, ["test", "-e", path], check=False).ok:
        return Change.unchanged(host.name, "remove_remote_file", path, f"no {path}")
    execute(host, ["rm", "-f", "--", path])
    return Change.made(host.name, "remove_remote_file", path, f"removed {path}")


@flow(name="diagnostic-bundle", flow_run_name="diagnostic-bundle-{host}")
def diagnostic_bundle(
    host: str,
    reference: str | None = None,
    paths: list[str] | None = None,
    keep_remote: bool = False,
    dry_run: bool = False,
) -> FulfillmentResult:
    """Collect a diagnostic bundle from a host and keep it under the opsflow home.

    Args:
        host: the host, as the estate names it.
        reference: names the local file (request fulfillment passes the request number).
        paths: what to collect besides ps, df and uname; default `BUNDLE_PATHS`.
        keep_remote: leave the archive in the host's /tmp (default: remove it once fetched).
        dry_run: say what would be collected and collect nothing.
    """
    estate = read_estate()
    try:
        target = estate.host(host)
    except KeyError:
        raise FulfillmentError(f"host: no host {host!r} in the estate") from None
    wanted = list(paths or BUNDLE_PATHS)
    if dry_run:
        return FulfillmentResult(
            summary=f"dry run: would collect {', '.join(wanted)}, ps, df and uname from {host}",
            changed=False,
            dry_run=True,
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", reference or "bundle")
    local = get_settings().home / "bundles" / f"{label}-{target.name}-{stamp}.tar.gz"
    # Named here, not on the host, so the flow knows what to fetch and remove whatever the
    # script prints; random, so nobody sharing the host's /tmp can plant a file there first.
    archive = f"/tmp/opsflow-bundle.{secrets.token_hex(16)}.tar.gz"
    try:
        created = create_bundle(target, archive, wanted)
        fetched = fetch_file(target, archive, str(local))
    finally:
        if not keep_remote:
            remove_remote_file(target, archive)
    attachment = Attachment(
        name=local.name,
        path=fetched.local_path,
        sha256=fetched.sha256,
        size=fetched.size,
        host=target.name,
        remote_path=archive,
    )
    return FulfillmentResult(
        summary=f"collected {', '.join(wanted)}, ps, df and uname from {host}: "
        f"{local.name}, {fetched.size} bytes, sha256 {fetched.sha256} (verified on both ends)",
        changed=True,
        hosts=[created],
        attachments=[attachment],
    )


if __name__ == "__main__":
    import sys

    diagnostic_bundle(sys.argv[1])
