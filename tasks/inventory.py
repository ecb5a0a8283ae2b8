"""Read the estate the flows act on, keeping the last good one through a broken edit."""

from __future__ import annotations

import threading
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from opsflow.errors import InventoryError
from opsflow.inventory.loader import EstateStamp, estate_stamp, load_estate
from opsflow.inventory.models import Estate
from opsflow.settings import get_settings
from opsflow.tasks.run_logging import run_logger

_last_good: dict[Path, tuple[EstateStamp, Estate]] = {}
_lock = threading.Lock()


@task(timeout_seconds=60, cache_policy=NONE)
def read_estate(estate_dir: str | None = None) -> Estate:
    """Load and validate the estate: `estate_dir`, else `OPSFLOW_INVENTORY`, else the lab's.

    A typo in one file must not stop triage and restoration in a process that already ran
    on a good estate: then that estate is used, and every caller says so in a warning. Code
    outside a task (a flow's failure hook) reads the same estate through `read_estate.fn`.
    A process that never loaded one fails with the problems (`InventoryError`).
    """
    directory = Path(estate_dir or get_settings().estate_dir).resolve()
    with _lock:
        last = _last_good.get(directory)
    stamp = estate_stamp(directory, last[1] if last else None)
    if last is not None and last[0] == stamp:
        return last[1]
    try:
        estate = load_estate(directory)
    except InventoryError as exc:
        if last is None:
            raise
        run_logger(__name__).warning(
            "estate %s does not load; acting on the last good one this process read: %s",
            directory,
            exc,
        )
        return last[1]
    # Stamped with its known_hosts file too once the estate names it; if a file changed
    # while it loaded, the stamp taken before loading makes the next run read it again.
    settled = estate_stamp(directory, estate)
    with _lock:
        _last_good[directory] = (settled if set(stamp) <= set(settled) else stamp, estate)
    return estate
