"""The one place opsflow tells people things: Prefect notification blocks the estate names.

Incidents page a team's on-call; requests and access grants tell the person who asked
(their own block, else their team's). Who gets what is the estate's people.yaml.
"""

from __future__ import annotations

from typing import cast

from prefect import task
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from opsflow.errors import PermanentError
from opsflow.inventory.models import Estate


@task(
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[1, 3],
    timeout_seconds=60,
    task_run_name="notify[{block}]",
)
def send_notification(block: str, subject: str, body: str) -> str:
    """Send one message through a Prefect notification block (type/name); returns the block."""
    # Prefect types load() as a plain Block or its coroutine; from sync code it is the block of
    # the named type, and the estate names notification blocks here. NotificationBlock types
    # notify() async; its blocks dispatch to their sync notify() from sync code, as here.
    notifier = cast(NotificationBlock, Block.load(block))
    notifier.notify(body=body, subject=subject)  # type: ignore[unused-coroutine]  # sync here
    return block


def person_block(estate: Estate, name: str) -> str | None:
    """The notification block that reaches `name`: their own, else their team's, else None."""
    person = estate.person(name)
    if person is None:
        return None
    if person.notify_block:
        return person.notify_block
    team = estate.team(person.team) if person.team else None
    return team.notify_block if team else None


def notify_person(estate: Estate, name: str, subject: str, body: str) -> str | None:
    """Tell one person; returns the block used, or None when the estate gives no way."""
    block = person_block(estate, name)
    if block is None:
        get_run_logger().info("no notification block reaches %s: not told %r", name, subject)
        return None
    return send_notification(block, subject, body)


def notify_on_call(estate: Estate, team: str, subject: str, body: str) -> str:
    """Page the team's on-call through its notification block; returns who was paged."""
    found = estate.team(team)
    if found is None or not found.notify_block:
        raise PermanentError(f"team {team!r} has no notify_block in people.yaml: nobody to page")
    send_notification(found.notify_block, subject, body)
    get_run_logger().info("paged %s (%s) through %s", found.on_call, team, found.notify_block)
    return found.on_call or team
