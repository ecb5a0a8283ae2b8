"""Priority from impact and urgency by the standard ITIL matrix, and SLA targets per priority."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

# (impact, urgency) -> priority; 1 is the highest of each.
_MATRIX: dict[tuple[int, int], int] = {
    (1, 1): 1,
    (1, 2): 2,
    (2, 1): 2,
    (1, 3): 3,
    (2, 2): 3,
    (3, 1): 3,
    (2, 3): 4,
    (3, 2): 4,
    (3, 3): 5,
}


def priority(impact: int, urgency: int) -> int:
    """Priority P1-P5 for an impact and an urgency of 1 (high) to 3 (low).

    Raises:
        ValueError: naming the field whose value is outside 1..3.
    """
    for field, value in (("impact", impact), ("urgency", urgency)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3:
            raise ValueError(f"{field} must be an integer from 1 to 3, got {value!r}")
    return _MATRIX[(impact, urgency)]


class SlaTarget(BaseModel):
    """How soon an incident of one priority must be responded to and resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    respond: timedelta = Field(description="Longest time from opening to the first response.")
    resolve: timedelta = Field(
        description="Longest time from opening to resolution, not counting time On Hold."
    )

    @model_validator(mode="after")
    def _respond_within_resolve(self) -> SlaTarget:
        if self.respond <= timedelta(0) or self.resolve < self.respond:
            raise ValueError("need 0 < respond <= resolve")
        return self


class SlaTargets(BaseModel):
    """Response and resolution targets for P1-P5; override any priority by passing it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p1: SlaTarget = SlaTarget(respond=timedelta(minutes=15), resolve=timedelta(hours=1))
    p2: SlaTarget = SlaTarget(respond=timedelta(minutes=30), resolve=timedelta(hours=4))
    p3: SlaTarget = SlaTarget(respond=timedelta(hours=1), resolve=timedelta(hours=8))
    p4: SlaTarget = SlaTarget(respond=timedelta(hours=4), resolve=timedelta(hours=24))
    p5: SlaTarget = SlaTarget(respond=timedelta(days=1), resolve=timedelta(weeks=1))

    def for_priority(self, priority: int) -> SlaTarget:
        """The target for priority 1..5."""
        if isinstance(priority, bool) or priority not in (1, 2, 3, 4, 5):
            raise ValueError(f"priority must be an integer from 1 to 5, got {priority!r}")
        return getattr(self, f"p{priority}")

    def due_dates(self, priority: int, opened_at: datetime) -> tuple[datetime, datetime]:
        """When the response and the resolution of an incident opened at `opened_at` are due."""
        target = self.for_priority(priority)
        return opened_at + target.respond, opened_at + target.resolve
