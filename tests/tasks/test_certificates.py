"""How near its end a certificate is: exception, warning or ok, by the configured days."""

from __future__ import annotations

import pytest

from opsflow.tasks.certificates import classify_expiry


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (-1, "exception"),
        (4.9, "exception"),
        (7, "exception"),
        (7.1, "warning"),
        (30, "warning"),
        (30.5, "ok"),
    ],
)
def test_expiry_classes(days: float, expected: str) -> None:
    assert classify_expiry(days, warn_days=30, critical_days=7) == expected
