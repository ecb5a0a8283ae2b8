"""Service requests: the record, its state machine, and the signed approval decision.

A request is submitted against a catalog item, waits for approval when the item's policy
asks for one, is fulfilled by the item's flow, and ends fulfilled, failed, rejected, expired
or canceled. Like `itsm.lifecycle`, nothing here reads the clock or the database: the caller
passes `now`, so the store, the flows and the tests get the same answer for the same inputs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsflow.itsm.numbering import NumberedRecord, Numbering
from opsflow.itsm.records import UtcDatetime
from opsflow.itsm.states import StateMachine

RequestState = Literal[
    "submitted",
    "awaiting-approval",
    "approved",
    "fulfilling",
    "fulfilled",
    "failed",
    "rejected",
    "expired",
    "canceled",
]
InputValue = str | int
"""A validated catalog input: integers for type integer, strings for every other type."""

REQUEST_STATES: StateMachine[RequestState] = StateMachine(
    "service request",
    {
        "submitted": ("awaiting-approval", "approved", "rejected", "failed", "canceled"),
        "awaiting-approval": ("approved", "rejected", "expired", "failed", "canceled"),
        "approved": ("fulfilling", "failed", "canceled"),
        "fulfilling": ("fulfilled", "failed", "approved"),
        "fulfilled": (),
        "failed": (),
        "rejected": (),
        "expired": (),
        "canceled": (),
    },
)
"""The request state machine; a request that has started fulfillment can no longer be canceled,
and its final states close it.

Fulfilling goes back to approved only when the desk carrying it stopped and another takes it
over to fulfill it again (fulfillment flows are idempotent)."""

REQUEST_NUMBERING = Numbering("REQ")

PENDING_STATES: tuple[RequestState, ...] = ("submitted", "awaiting-approval")
"""States in which a decision about the request may still be taken."""

CARRIED_STATES: tuple[RequestState, ...] = (*PENDING_STATES, "approved", "fulfilling")
"""States in which a flow run is carrying the request towards a final state."""


class Attachment(BaseModel):
    """A file a fulfillment produced and opsflow keeps, with the checksum both ends agreed on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255)
    path: str = Field(description="Where opsflow stored it, on the machine that ran the flow.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    host: str | None = Field(default=None, description="The host it was collected from.")
    remote_path: str | None = None


class ServiceRequest(NumberedRecord):
    """A request for something the catalog offers, and what became of it."""

    numbering = REQUEST_NUMBERING

    item: str = Field(description="The catalog item asked for.")
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    requester: str
    state: RequestState = "submitted"
    approval_policy: Literal["none", "one"] = "none"
    approver: str | None = Field(
        default=None, description="Who decided: a person, 'prefect-ui', or opsflow for a policy."
    )
    decision_comment: str | None = None
    decided_at: UtcDatetime | None = None
    approval_due_at: UtcDatetime | None = Field(
        default=None, description="When the current approval window closes."
    )
    escalated_at: UtcDatetime | None = None
    approval_run_id: str | None = Field(
        default=None, description="The paused flow run an approval resumes."
    )
    submitted_at: UtcDatetime
    updated_at: UtcDatetime
    fulfil_due_at: UtcDatetime | None = Field(
        default=None, description="When fulfillment must have finished, once it started."
    )
    closed_at: UtcDatetime | None = Field(
        default=None, description="When it reached a final state."
    )
    outcome: str | None = Field(default=None, description="What fulfillment did, or why it ended.")
    flow_run_ids: list[str] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)
    version: int = Field(default=1, ge=1, description="Bumped on every change.")

    @property
    def is_closed(self) -> bool:
        """Whether the request reached a final state."""
        return self.state in REQUEST_STATES.final


class RequestCreate(BaseModel):
    """What a person sends to ask for a catalog item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: str = Field(min_length=1, max_length=63, description="The catalog item's name.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="The item's inputs by name; validated by the catalog."
    )


class DecisionIn(BaseModel):
    """An approver's decision as sent to the desk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    comment: str = Field(default="", max_length=2000)


def apply_transition(
    request: ServiceRequest, target: RequestState, now: datetime, /, **changes: Any
) -> ServiceRequest:
    """The request moved to `target` at `now` with `changes`, after checking the move is legal.

    Deciding (approved, rejected) needs an approver and stamps `decided_at`; a final state
    stamps `closed_at` and ends any approval window.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    REQUEST_STATES.check(request.state, target, request.number)
    update: dict[str, Any] = {**changes, "state": target, "updated_at": now}
    if target in ("approved", "rejected"):
        if not (changes.get("approver") or request.approver):
            raise ValueError(f"{request.number}: {target} needs an approver")
        update.setdefault("decided_at", now)
    if target in REQUEST_STATES.final:
        update["closed_at"] = now
    if target != "awaiting-approval":
        update.setdefault("approval_due_at", None)
    return ServiceRequest.model_validate({**request.model_dump(), **update})


Decision = Literal["approve", "reject"]


def decision_signature(
    key: bytes, request_id: int, flow_run_id: str, decision: Decision, approver: str, comment: str
) -> str:
    """HMAC-SHA256 binding a decision to one request, one paused run, its approver and comment.

    The desk signs the decisions it has authenticated; the flow recomputes this to tell them
    apart from input typed into the Prefect UI, which carries no identity in OSS Prefect.
    """
    message = json.dumps([request_id, flow_run_id, decision, approver, comment]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_valid(
    key: bytes,
    signature: str | None,
    request_id: int,
    flow_run_id: str,
    decision: Decision,
    approver: str | None,
    comment: str,
) -> bool:
    """Whether `signature` is the desk's signature over exactly this decision."""
    if not signature or not approver:
        return False
    expected = decision_signature(key, request_id, flow_run_id, decision, approver, comment)
    return hmac.compare_digest(expected, signature)
