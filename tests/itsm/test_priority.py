"""The priority matrix and the SLA targets it selects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from opsflow.itsm.priority import SlaTarget, SlaTargets, priority


@pytest.mark.parametrize(
    ("impact", "urgency", "expected"),
    [
        (1, 1, 1),
        (1, 2, 2),
        (2, 1, 2),
        (1, 3, 3),
        (2, 2, 3),
        (3, 1, 3),
        (2, 3, 4),
        (3, 2, 4),
        (3, 3, 5),
    ],
)
def test_matrix(impact: int, urgency: int, expected: int) -> None:
    assert priority(impact, urgency) == expected


@pytest.mark.parametrize(
    ("impact", "urgency", "field"),
    [
        (0, 1, "impact"),
        (4, 2, "impact"),
        (-1, 3, "impact"),
        (True, 1, "impact"),
        ("1", 1, "impact"),
        (1, 0, "urgency"),
        (2, 4, "urgency"),
        (3, None, "urgency"),
        (2, 1.0, "urgency"),
    ],
)
def test_values_outside_1_to_3_are_refused_naming_the_field(
    impact: object, urgency: object, field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be an integer from 1 to 3"):
        priority(impact, urgency)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "respond", "resolve"),
    [
        (1, timedelta(minutes=15), timedelta(hours=1)),
        (2, timedelta(minutes=30), timedelta(hours=4)),
        (3, timedelta(hours=1), timedelta(hours=8)),
        (4, timedelta(hours=4), timedelta(hours=24)),
        (5, timedelta(days=1), timedelta(weeks=1)),
    ],
)
def test_default_targets(level: int, respond: timedelta, resolve: timedelta) -> None:
    assert SlaTargets().for_priority(level) == SlaTarget(respond=respond, resolve=resolve)


def test_targets_are_overridable_per_priority_and_from_config_values() -> None:
    targets = SlaTargets.model_validate({"p1": {"respond": "PT5M", "resolve": 1800}})
    assert targets.p1 == SlaTarget(respond=timedelta(minutes=5), resolve=timedelta(minutes=30))
    assert targets.p2 == SlaTargets().p2
    opened = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert targets.due_dates(1, opened) == (
        opened + timedelta(minutes=5),
        opened + timedelta(minutes=30),
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"p1": {"respond": "PT2H", "resolve": "PT1H"}},
        {"p1": {"respond": 0, "resolve": "PT1H"}},
        {"p6": {"respond": "PT1H", "resolve": "PT2H"}},
    ],
    ids=["respond-after-resolve", "zero-respond", "unknown-priority"],
)
def test_nonsense_targets_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SlaTargets.model_validate(bad)


@pytest.mark.parametrize("level", [0, 6, True])
def test_for_priority_outside_1_to_5(level: int) -> None:
    with pytest.raises(ValueError, match="priority must be an integer from 1 to 5"):
        SlaTargets().for_priority(level)
