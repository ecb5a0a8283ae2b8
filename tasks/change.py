"""The one result of every task that changes something: unchanged, planned or made.

A changing task reads first and changes only what differs, so running it twice is safe, and
with `dry_run` it stops after deciding. Its `Change` says which of the three happened; tasks
that carry more (bytes freed, files kept) return a subclass with those fields. Tasks that only
read return what they read.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

ChangeState = Literal["unchanged", "planned", "made"]


class Change(BaseModel):
    """What one task did to one thing, or in a dry run would do.

    `state` is `unchanged` (nothing to do; `detail` says why), `planned` (a dry run found
    something to do and did nothing; `detail` says what it would do) or `made` (it changed
    something; `detail` says what). `changed` is true only for `made`: a dry run never reports
    changed, so summing `changed` counts real changes in any mode, and a dry run's plan is the
    changes whose state is `planned`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = Field(
        description="The host it acted on; None when it acted on none (opsflow's own files, "
        "Alertmanager's silences)."
    )
    action: str = Field(description='The step, as its task is named, e.g. "install_key".')
    target: str = Field(description='What it acted on, e.g. "account carol".')
    state: ChangeState
    detail: str = Field(description='What was done, "would <what>", or "unchanged: <why>".')

    @computed_field  # type: ignore[prop-decorator]
    @property
    def changed(self) -> bool:
        """True only when something was changed (`made`), never in a dry run."""
        return self.state == "made"

    @model_validator(mode="before")
    @classmethod
    def _derived_changed(cls, data: Any) -> Any:
        """Accept a dumped Change back: its `changed` is derived, and must agree with `state`."""
        if isinstance(data, dict) and "changed" in data:
            data = dict(data)
            if data.pop("changed") != (data.get("state") == "made"):
                raise ValueError("changed: must be true exactly when state is 'made'")
        return data

    @classmethod
    def unchanged(cls, host: str | None, action: str, target: str, why: str, **more: Any) -> Self:
        """Nothing to do, and why (`why`, e.g. "carol exists")."""
        return cls(
            host=host,
            action=action,
            target=target,
            state="unchanged",
            detail=f"unchanged: {why}",
            **more,
        )

    @classmethod
    def planned(cls, host: str | None, action: str, target: str, what: str, **more: Any) -> Self:
        """A dry run's finding: what the task would do (`what`, e.g. "create carol")."""
        return cls(
            host=host, action=action, target=target, state="planned", detail=f"would {what}", **more
        )

    @classmethod
    def made(cls, host: str | None, action: str, target: str, what: str, **more: Any) -> Self:
        """What the task changed (`what`, e.g. "created carol")."""
        return cls(host=host, action=action, target=target, state="made", detail=what, **more)
