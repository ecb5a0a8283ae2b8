"""mirror-maintenance-windows: the estate's planned windows (maintenance.yaml) as silences.

Planned windows live in YAML that opsflow never writes, so the silences carry the link
themselves: `createdBy: opsflow` and a comment naming the window, its estate and file. Each
run makes the missing silences of every window not yet over (a window ahead is silenced
ahead, pending in Alertmanager until it starts) and expires opsflow's silences of windows
removed from the file or changed; so a cancelled window stops silencing within a run. Every
window is tried, and the failures are reported together at the end.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import Estate, MaintenanceWindow
from opsflow.itsm.ci import silence_label_sets
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.silences import SilenceChange, create_silence, end_silence, read_silences


def estate_marker(estate: Estate) -> str:
    """What every comment of this estate's planned-window silences holds."""
    return f"(estate {estate.settings.name}, maintenance.yaml)"


def window_comment(window: MaintenanceWindow, estate: Estate) -> str:
    """The comment of a planned window's silences: its name, where it is declared, why."""
    return f"opsflow maintenance window {window.name} {estate_marker(estate)}: {window.reason}"


def _hosts(window: MaintenanceWindow, estate: Estate) -> list:
    names = set(window.hosts) | set(estate.groups.get(window.group or "", []))
    return [h for h in estate.hosts if h.name in names]


@flow(name="mirror-maintenance-windows")
def mirror_maintenance_windows(estate_dir: str | None = None) -> list[SilenceChange]:
    """Make the silences of the estate's planned windows, expire those no window wants.

    Args:
        estate_dir: Estate directory; default the configured one.
    """
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    link = estate.settings.alertmanager
    if link is None:
        logger.info("estate.yaml names no alertmanager: no silences to mirror")
        return []
    now = datetime.now(UTC)
    rows: list[dict[str, str]] = []
    changes: list[SilenceChange] = []
    failed: dict[str, str] = {}  # comment -> error: its silences are left as they are
    for window in estate.maintenance:
        if window.end <= now:
            continue
        comment = window_comment(window, estate)
        for matchers in silence_label_sets(_hosts(window, estate), estate.settings.labels):
            try:
                change = create_silence(link, matchers, window.start, window.end, comment)
            except OpsError as exc:
                failed[comment] = str(exc)
                rows.append({"window": window.name, "silence": "-", "did": f"failed: {exc}"})
                continue
            changes.append(change)
            rows.append({"window": window.name, "silence": change.silence_id, "did": change.detail})
    kept = {c.silence_id for c in changes}
    for silence in read_silences(link, estate_marker(estate)):
        if silence.id in kept or silence.comment in failed:
            continue
        change = end_silence(link, silence.id, now)
        changes.append(change)
        rows.append({"window": silence.comment[:80], "silence": silence.id, "did": change.detail})
    create_table_artifact(
        key="mirror-maintenance-windows",
        table=rows,
        description=f"Planned maintenance windows as silences in {link.url}: "
        f"{sum(c.changed for c in changes)} changed, {len(failed)} window(s) failed.",
    )
    if failed:
        raise PermanentError(
            "silences not mirrored: " + "; ".join(f"{c}: {e}" for c, e in failed.items())
        )
    return changes


if __name__ == "__main__":
    mirror_maintenance_windows()
