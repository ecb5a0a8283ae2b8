"""Who may approve what: one rule for service requests and access alike."""

from __future__ import annotations

from opsflow.errors import PermanentError
from opsflow.inventory.models import Audience, Estate, Person


class ApprovalRefusedError(PermanentError, PermissionError):
    """The person may not decide this request; the message says why."""


def check_approver(approver: Person, requester: str, approvers: Audience, what: str) -> None:
    """Refuse self-approval and anyone outside the policy's approvers.

    Args:
        approver: the authenticated person deciding.
        requester: the name of the person who asked.
        approvers: who the policy lets decide.
        what: the request, for the message (e.g. "REQ0000012").
    """
    if approver.name == requester:
        raise ApprovalRefusedError(f"{approver.name} cannot approve their own request {what}")
    if not approvers.admits(approver):
        wanted = (
            ", ".join(
                [f"role {r}" for r in approvers.roles]
                + [f"team {t}" for t in approvers.teams]
                + [f"person {p}" for p in approvers.people]
            )
            or "nobody"
        )
        raise ApprovalRefusedError(
            f"{approver.name} may not approve {what}: the policy wants {wanted}"
        )


def approvable_items(estate: Estate, person: Person) -> list[str]:
    """The catalog items whose requests `person` may approve (their own excepted)."""
    return [
        item.name
        for item in estate.catalog
        if item.approval.policy != "none" and item.approval.approvers.admits(person)
    ]


def approvable_entitlements(estate: Estate, person: Person) -> list[str]:
    """The entitlements whose grants `person` may approve (their own excepted)."""
    return [e.name for e in estate.entitlements if e.approvers.admits(person)]
