"""What an access review finds: each account, key and sudo rule opsflow manages on a host,
matched with the live grant that explains it, or reported as explained by none.

Pure: host facts (`facts.read_access_facts`) and grants in, items out; the review flow
decides what to do with the unexplained ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from opsflow.inventory.models import Estate
from opsflow.itsm.access import (
    LIVE_STATES,
    AccessGrant,
    explains_key,
    explains_sudo_rule,
    grant_covers,
    marker,
)
from opsflow.tasks.access.facts import AccessFacts


class ReviewItem(BaseModel):
    """Something opsflow manages found on a host, and the grant that explains it, if any.

    Kind `authorized_keys` is an account's file review could not read whole (oversized, or
    too many marked lines): never explained, always reported, never removed by enforce.
    """

    model_config = ConfigDict(extra="forbid")

    host: str
    kind: Literal["account", "key", "sudo_rule", "authorized_keys"]
    name: str
    explained_by: str | None
    action: Literal["kept", "reported", "removed", "failed"] = "kept"
    detail: str = ""


def explain(
    estate: Estate, grants: Sequence[AccessGrant], facts: Sequence[AccessFacts]
) -> list[ReviewItem]:
    """Match each managed account, key and sudo rule on each host with a live grant."""
    live = [g for g in grants if g.state in LIVE_STATES]

    def covers(grant: AccessGrant, host: str) -> bool:
        return grant_covers(grant, host, estate.groups)

    by_id = {g.id: g for g in live}
    items: list[ReviewItem] = []
    for found in facts:
        host = found.host
        for account in found.accounts:
            owner = next(
                (g for g in live if g.username == account.username and covers(g, host)), None
            )
            items.append(
                ReviewItem(
                    host=host,
                    kind="account",
                    name=account.username,
                    explained_by=marker(owner.id) if owner else None,
                )
            )
        for key in found.ssh_keys:
            grant = by_id.get(key.grant_id)
            ok = (
                grant is not None
                and explains_key(grant, key.username, key.grant_id, key.key)
                and covers(grant, host)
            )
            items.append(
                ReviewItem(
                    host=host,
                    kind="key",
                    name=f"{key.username}:{marker(key.grant_id)}",
                    explained_by=marker(key.grant_id) if ok else None,
                )
            )
        for rule in found.sudo_rules:
            grant = by_id.get(rule.grant_id) if rule.grant_id is not None else None
            ok = (
                grant is not None
                and explains_sudo_rule(grant, rule.name, rule.content)
                and covers(grant, host)
            )
            items.append(
                ReviewItem(
                    host=host,
                    kind="sudo_rule",
                    name=rule.name,
                    explained_by=marker(grant.id) if ok and grant else None,
                )
            )
        for unread in found.unread_keys:
            items.append(
                ReviewItem(
                    host=host,
                    kind="authorized_keys",
                    name=unread.username,
                    explained_by=None,
                    detail=unread.reason,
                )
            )
    for item in items:
        if item.explained_by is None:
            item.action = "reported"
            item.detail = item.detail or "no live grant explains it"
    return items
