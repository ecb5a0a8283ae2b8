"""Tell people what happened, through the Prefect notification blocks the estate names."""

from __future__ import annotations

from prefect import task
from prefect.blocks.core import Block
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from inventory.models import Estate
from opsflow.errors import PermanentError


@task(
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[1, 3],
    timeout_seconds=60,
    task_run_name="notify_on_call[{team}]",
)
def notify_on_call(estate: Estate, team: str, subject: str, body: str) -> str:
    """Page the team's on-call through its notification block; returns who was paged."""
    found = estate.team(team)
    if found is None or not found.notify_block:
        raise PermanentError(f"team {team!r} has no notify_block in people.yaml: nobody to page")
    block = Block.load(found.notify_block)
    block.notify(body=body, subject=subject)
    get_run_logger().info("paged %s (%s) through %s", found.on_call, team, found.notify_block)
    return found.on_call or team
