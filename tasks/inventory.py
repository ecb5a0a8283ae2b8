"""Read the estate the flows act on."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from inventory.loader import load_estate
from inventory.models import Estate
from opsflow.settings import get_settings


@task(timeout_seconds=60, cache_policy=NONE)
def read_estate(estate_dir: str | None = None) -> Estate:
    """Load and validate the estate: `estate_dir`, else `OPSFLOW_INVENTORY`, else the lab's."""
    return load_estate(estate_dir or get_settings().estate_dir)
