"""Releases: a version of a service rolled across its hosts, the record of it, its state machine.

A release is recorded approved: by the catalog's `deploy-release` request once its approval
policy let it through, or by an operator directly. The rollout moves it to rolling-out, and
it ends deployed (every host runs the version and passed its health gate), failed (a gate
failed and the hosts already changed were put back, `rollback` says how) or canceled before
it started. Each host's progress is kept on the record as the rollout goes, so a rollout
taken over after its process died knows which hosts were changed. As in `itsm.requests`,
nothing here reads the clock or the database: the caller passes `now`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opsflow.inventory.types import ReleaseVersion
from opsflow.itsm.markdown import md_text
from opsflow.itsm.numbering import NumberedRecord, Numbering
from opsflow.itsm.records import AuditEntry, UtcDatetime
from opsflow.itsm.states import StateMachine

ReleaseState = Literal["approved", "rolling-out", "deployed", "failed", "canceled"]

RELEASE_STATES: StateMachine[ReleaseState] = StateMachine(
    "release",
    {
        "approved": ("rolling-out", "failed", "canceled"),
        "rolling-out": ("deployed", "failed"),
        "deployed": (),
        "failed": (),
        "canceled": (),
    },
)
"""The release state machine: once a rollout started it ends deployed or failed, never
canceled half-way (a failed one has put back what it changed)."""

RELEASE_NUMBERING = Numbering("REL")

CARRIED_STATES: tuple[ReleaseState, ...] = ("approved", "rolling-out")
"""States in which a rollout run is carrying the release towards a final state."""

HostStep = Literal[
    "pending", "unchanged", "deploying", "deployed", "failed", "rolled-back", "rollback-failed"
]
"""Where one host is in a rollout: not reached yet; already on the version (nothing done);
being changed (its window open, the release put in place or restarting); done and healthy;
its gate failed; put back on its previous release; putting it back failed."""

CHANGED_STEPS: tuple[HostStep, ...] = ("deploying", "deployed", "failed", "rollback-failed")
"""Host steps after which the host may run another release than before the rollout."""

BATCH_PATTERN = re.compile(r"^(?:[1-9][0-9]{0,3}|(?:100|[1-9][0-9]?)%)$")


class ReleaseHost(BaseModel):
    """One host of a release's rollout: what it ran before and how far the rollout got."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    previous: str | None = Field(
        default=None, description="The release `current` named before the rollout changed it."
    )
    step: HostStep = "pending"
    detail: str = ""


class Release(NumberedRecord):
    """A version of a service rolled out across its hosts, and what became of it."""

    numbering = RELEASE_NUMBERING

    service: str
    to_version: ReleaseVersion = Field(description="The version rolled out.")
    from_version: str | None = Field(
        default=None,
        description="What the hosts ran before (comma-separated when they differed).",
    )
    batch: str = Field(default="1", description="Hosts changed at once: a count or a percentage.")
    canary: int = Field(default=0, ge=0, le=1, description="1: one host goes first, alone.")
    pause_s: float = Field(default=0.0, ge=0, le=3600, description="Pause between batches.")
    requester: str
    approver: str = Field(
        description="Who let it through: an approver, the catalog, or the operator who asked."
    )
    request: str | None = Field(
        default=None, description="The catalog request (REQ…) it came from, if any."
    )
    state: ReleaseState = "approved"
    hosts: list[ReleaseHost] = Field(default_factory=list)
    outcome: str | None = None
    rollback: str | None = Field(default=None, description="What rolling back did, if it ran.")
    requested_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    updated_at: UtcDatetime
    flow_run_ids: list[str] = Field(default_factory=list)
    incidents: list[str] = Field(
        default_factory=list,
        description="Incidents opened on the service within the estate's window after it.",
    )
    version: int = Field(default=1, ge=1, description="Bumped on every change.")

    @field_validator("batch")
    @classmethod
    def _batch_shape(cls, value: str) -> str:
        return valid_batch(value)

    @property
    def is_closed(self) -> bool:
        """Whether the release reached a final state."""
        return self.state in RELEASE_STATES.final

    def host(self, name: str) -> ReleaseHost | None:
        """The rollout's entry for host `name`, if it has one."""
        return next((h for h in self.hosts if h.host == name), None)


class ReleaseCreate(BaseModel):
    """What an operator sends to roll a version of a service out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(min_length=1, max_length=255)
    version: ReleaseVersion
    batch: str = Field(default="1", description="Hosts at once: N or P% (1-100%).")
    canary: int = Field(default=0, ge=0, le=1)
    pause_s: float = Field(default=0.0, ge=0, le=3600)

    @field_validator("batch")
    @classmethod
    def _batch_shape(cls, value: str) -> str:
        return valid_batch(value)


def valid_batch(value: str) -> str:
    """`value` if it is a batch size (1-9999 hosts, or 1%-100%); else ValueError saying so."""
    text = str(value).strip()
    if not BATCH_PATTERN.match(text):
        raise ValueError(
            f"batch {value!r}: a number of hosts (1-9999) or a percentage of them (1%-100%)"
        )
    return text


def batch_size(batch: str, hosts: int) -> int:
    """How many of `hosts` hosts one batch changes at once (at least one)."""
    batch = valid_batch(batch)
    if batch.endswith("%"):
        return max(1, hosts * int(batch[:-1]) // 100)
    return max(1, min(int(batch), hosts))


def plan_batches(hosts: list[str], batch: str, canary: int) -> list[list[str]]:
    """The hosts in the order they are changed: the canary alone first, then batches."""
    size = batch_size(batch, len(hosts)) if hosts else 1
    first, rest = (hosts[:1], hosts[1:]) if canary and hosts else ([], hosts)
    batches = [first] if first else []
    batches += [rest[i : i + size] for i in range(0, len(rest), size)]
    return batches


def apply_transition(
    release: Release, target: ReleaseState, now: datetime, /, **changes: Any
) -> Release:
    """The release moved to `target` at `now` with `changes`, after checking the move is legal.

    Rolling out stamps `started_at`; a final state stamps `finished_at`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    RELEASE_STATES.check(release.state, target, release.number)
    update: dict[str, Any] = {**changes, "state": target, "updated_at": now}
    if target == "rolling-out":
        update.setdefault("started_at", now)
    if target in RELEASE_STATES.final:
        update["finished_at"] = now
    return Release.model_validate({**release.model_dump(), **update})


def release_before(
    releases: Iterable[Release], service: str, at: datetime, window: timedelta
) -> Release | None:
    """The newest of `releases` of `service` that started by `at` and was still rolling out,
    or ended, within `window` before `at`: the change an incident opened at `at` may come
    from."""
    found = [
        r
        for r in releases
        if r.service == service
        and r.started_at is not None
        and r.started_at <= at
        and (r.finished_at is None or r.finished_at >= at - window)
    ]
    return max(found, key=lambda r: (r.started_at, r.id), default=None)


def rollback_summary(record: Release) -> str:
    """What rolling back did, host by host, from the record: complete, or which hosts a
    person must put back by hand."""
    back = [h for h in record.hosts if h.step in ("rolled-back", "rollback-failed")]
    if not back:
        return "no host had been changed: nothing to roll back"
    failed = [h.host for h in back if h.step == "rollback-failed"]
    lines = "; ".join(f"{h.host}: {h.step} to {h.previous} ({h.detail})" for h in back)
    verdict = f"NOT complete, put back by hand: {', '.join(failed)}" if failed else "complete"
    return f"rollback {verdict}: {lines}"[:4000]


def release_notice(record: Release) -> tuple[str, str]:
    """The subject and body telling the requester what became of their release."""
    subject = f"[opsflow] {record.number} {record.service} {record.to_version}: {record.state}"
    lines = [
        f"{record.number}: {record.service} {record.from_version or '?'} -> "
        f"{record.to_version} is {record.state}.",
        f"Outcome: {record.outcome or '-'}",
    ]
    if record.rollback:
        lines.append(f"Rollback: {record.rollback}")
    return subject, "\n".join(lines)


def render_release(record: Release, trail: list[AuditEntry]) -> str:
    """The release, each host's step and its audit trail, as markdown for the Prefect UI."""
    return "\n".join(
        [
            f"# {record.number}: {md_text(record.service)} "
            f"{md_text(record.from_version or '?')} -> {md_text(record.to_version)} "
            f"({record.state})",
            "",
            f"- requester: {md_text(record.requester)}, approver: {md_text(record.approver)}",
            f"- outcome: {md_text(record.outcome or '-')}",
            f"- rollback: {md_text(record.rollback or '-')}",
            "",
            "| host | before | step | detail |",
            "|---|---|---|---|",
            *(
                f"| {md_text(h.host)} | {md_text(h.previous or '-')} | {h.step} "
                f"| {md_text(h.detail)} |"
                for h in record.hosts
            ),
            "",
            "| at | actor | action |",
            "|---|---|---|",
            *(f"| {e.at:%H:%M:%S} | {md_text(e.actor)} | {md_text(e.action)} |" for e in trail),
        ]
    )
