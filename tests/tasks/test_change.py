"""A Change says unchanged, planned or made, and `changed` only ever means made."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from opsflow.tasks.change import Change
from opsflow.tasks.log_rotation import LogRotation


def test_only_a_made_change_is_changed() -> None:
    made = Change.made("lab01", "install_key", "key of carol", "added it")
    planned = Change.planned("lab01", "install_key", "key of carol", "add it")
    unchanged = Change.unchanged("lab01", "install_key", "key of carol", "it is there")
    assert [c.changed for c in (made, planned, unchanged)] == [True, False, False]
    assert [c.detail for c in (made, planned, unchanged)] == [
        "added it",
        "would add it",
        "unchanged: it is there",
    ]


def test_a_dumped_change_reads_back_and_its_changed_must_agree() -> None:
    planned = LogRotation.planned(
        "lab01",
        "rotate_log",
        "/var/log/app/app.log",
        "rotate 10 bytes",
        service="app",
        rotated_bytes=10,
        deleted=[],
        steps=[],
        rotated_files=[],
    )
    dumped = planned.model_dump()
    assert dumped["changed"] is False and dumped["state"] == "planned"
    assert LogRotation.model_validate(dumped) == planned
    with pytest.raises(ValidationError, match="changed: must be true exactly when state is 'made'"):
        LogRotation.model_validate({**dumped, "changed": True})
    with pytest.raises(ValidationError, match="state"):
        Change.model_validate({**Change.made(None, "a", "t", "x").model_dump(), "state": "done"})
