"""Problem Management records: problems, known errors, their state machine and matching.

A problem explains recurring incidents (same service, same symptom); once its root cause is
understood and a workaround exists it becomes a known error, which triage applies to every
new matching incident. Everything here is a pure function of the records and the time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsflow.errors import PermanentError
from opsflow.itsm.numbering import NumberedRecord, Numbering
from opsflow.itsm.records import CiName, Incident, LongText, UtcDatetime
from opsflow.itsm.states import InvalidUpdateError, StateMachine

ProblemState = Literal["New", "Root Cause Analysis", "Known Error", "Resolved", "Closed"]

PROBLEM_STATES: StateMachine[ProblemState] = StateMachine(
    "problem",
    {
        "New": ("Root Cause Analysis",),
        "Root Cause Analysis": ("Known Error", "Resolved"),
        "Known Error": ("Resolved",),
        "Resolved": ("Closed", "Root Cause Analysis"),
        "Closed": (),
    },
)
"""The problem state machine; Root Cause Analysis -> Resolved is a fix found without a
workaround first, and Resolved -> Root Cause Analysis reopens a problem whose fix did not hold."""

PROBLEM_NUMBERING = Numbering("PRB")
KNOWN_ERROR_NUMBERING = Numbering("KE")

OPEN_PROBLEM_STATES: tuple[ProblemState, ...] = ("New", "Root Cause Analysis", "Known Error")
"""States in which a problem still collects incidents; at most one per service and symptom."""

Symptom = Annotated[str, Field(min_length=1, max_length=128)]


class UnknownRunbookError(PermanentError, ValueError):
    """A known error names a workaround runbook opsflow cannot run."""

    def __init__(self, runbook: str, available: Collection[str]):
        self.runbook = runbook
        super().__init__(
            f"workaround: no runbook {runbook!r}; available: {', '.join(sorted(available))}"
        )


class Problem(NumberedRecord):
    """The unknown cause of one or more incidents, investigated until it is removed."""

    numbering = PROBLEM_NUMBERING

    service: str
    symptom: str
    summary: str
    state: ProblemState = "New"
    root_cause: str | None = Field(default=None, description="Root-cause notes so far.")
    resolution_notes: str | None = None
    opened_at: UtcDatetime
    updated_at: UtcDatetime
    resolved_at: UtcDatetime | None = None
    closed_at: UtcDatetime | None = None
    incident_ids: list[int] = Field(
        default_factory=list, description="Incidents this problem explains, oldest first."
    )
    known_error_ids: list[int] = Field(
        default_factory=list, description="Known errors recorded for this problem."
    )
    version: int = Field(default=1, ge=1, description="Bumped on every change.")

    @property
    def is_open(self) -> bool:
        """Whether the problem still collects recurring incidents."""
        return self.state in OPEN_PROBLEM_STATES


class ProblemUpdate(BaseModel):
    """A change to a problem: only the fields given are changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: ProblemState | None = None
    root_cause: LongText | None = None
    resolution_notes: LongText | None = None


class KnownError(NumberedRecord):
    """A diagnosed fault: the signature it shows, its root cause and the workaround to apply."""

    numbering = KNOWN_ERROR_NUMBERING

    service: str
    symptom: str
    host: str | None = Field(default=None, description="Only this host, or any when null.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Event labels that must also be equal, all of them."
    )
    root_cause: str
    workaround: str = Field(description="The runbook triage applies to a matching incident.")
    problem_id: int | None = None
    times_applied: int = Field(default=0, ge=0, description="Restorations that ran the workaround.")
    times_worked: int = Field(default=0, ge=0, description="Of those, how many restored service.")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    retired_at: UtcDatetime | None = Field(
        default=None, description="When it stopped being applied (e.g. the fault was fixed)."
    )
    version: int = Field(default=1, ge=1)

    @property
    def active(self) -> bool:
        """Whether triage still applies this known error."""
        return self.retired_at is None

    @property
    def specificity(self) -> int:
        """How much of the signature goes beyond service and symptom (more wins a tie)."""
        return (1 if self.host else 0) + len(self.labels)

    def matches(
        self, service: str | None, symptom: str, host: str | None, labels: dict[str, str] | None
    ) -> bool:
        """Whether an incident or event with these fields shows this known error's signature.

        Labels the signature requires must be present and equal; without labels (an incident
        on its own) only signatures that require none can match.
        """
        if not self.active or service != self.service or symptom != self.symptom:
            return False
        if self.host is not None and host != self.host:
            return False
        given = labels or {}
        return all(given.get(name) == value for name, value in self.labels.items())


class KnownErrorCreate(BaseModel):
    """What an operator gives to record a known error; the signature needs service and symptom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: CiName
    symptom: Symptom
    host: CiName | None = None
    labels: dict[
        Annotated[str, Field(min_length=1, max_length=128)],
        Annotated[str, Field(max_length=512)],
    ] = Field(default_factory=dict, max_length=32)
    root_cause: LongText = Field(min_length=1)
    workaround: str = Field(min_length=1, max_length=255, description="A runbook's name.")
    problem: int | str | None = Field(
        default=None, description="The problem it comes from: id or number (PRB0000001)."
    )


def apply_problem_update(problem: Problem, update: ProblemUpdate, now: datetime) -> Problem:
    """The problem after `update` at `now`; the same object when nothing changes.

    Known Error and Resolved need root-cause notes; Resolved records when, a reopen clears
    it; a Closed problem never changes again.

    Raises:
        IllegalTransitionError: the move is not allowed, or the problem is Closed.
        InvalidUpdateError: the target state needs a field that is missing.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    given = update.model_dump(exclude_unset=True)
    changes: dict[str, Any] = {
        name: value
        for name, value in given.items()
        if name in ("root_cause", "resolution_notes") and value is not None
    }
    target = given.get("state") or problem.state
    if PROBLEM_STATES.kept_final(problem, target, changes):
        return problem
    if target != problem.state:
        PROBLEM_STATES.check(problem.state, target)
        changes["state"] = target
        if target == "Resolved":
            changes["resolved_at"] = now
        if problem.state == "Resolved" and target == "Root Cause Analysis":
            changes.update(resolved_at=None, resolution_notes=None)
        if target == "Closed":
            changes["closed_at"] = now
    if target in ("Known Error", "Resolved") and not changes.get("root_cause", problem.root_cause):
        raise InvalidUpdateError("root_cause", f"required for a problem to be {target}")
    if all(getattr(problem, name) == value for name, value in changes.items()):
        return problem
    return problem.model_copy(update={**changes, "updated_at": now})


def check_workaround(runbook: str, available: Collection[str]) -> None:
    """Refuse a workaround that is not one of the runbooks opsflow can run."""
    if runbook not in available:
        raise UnknownRunbookError(runbook, available)


def match_known_error(
    known_errors: Iterable[KnownError],
    service: str | None,
    symptom: str,
    host: str | None = None,
    labels: dict[str, str] | None = None,
) -> KnownError | None:
    """The active known error whose signature fits, the most specific first, then the oldest."""
    candidates = [ke for ke in known_errors if ke.matches(service, symptom, host, labels)]
    if not candidates:
        return None
    return min(candidates, key=lambda ke: (-ke.specificity, ke.id))


@dataclass(frozen=True)
class Recurrence:
    """Incidents of one service and symptom in the review window, and what to do about them.

    `to_link` are the incidents no problem explains yet: they go to `open_problem_id` when
    there is an open problem for the pair, else to a new problem when there are enough.
    """

    service: str
    symptom: str
    incident_ids: tuple[int, ...]
    to_link: tuple[int, ...]
    open_problem_id: int | None

    @property
    def needs_action(self) -> bool:
        """Whether the review must open a problem or add incidents to one."""
        return bool(self.to_link)


def find_recurrences(
    incidents: Sequence[Incident], open_problems: Sequence[Problem], threshold: int
) -> list[Recurrence]:
    """Group incidents by service and symptom and decide which become or join a problem.

    Canceled incidents and incidents without a service do not count. Incidents another
    problem already explains do not count toward the threshold, so a resolved problem's
    incidents do not reopen it. Groups are returned most frequent first.
    """
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    open_for = {(p.service, p.symptom): p.id for p in open_problems if p.is_open}
    groups: dict[tuple[str, str], list[Incident]] = defaultdict(list)
    for incident in incidents:
        if incident.service and incident.state != "Canceled":
            groups[(incident.service, incident.symptom)].append(incident)
    found = []
    for (service, symptom), members in groups.items():
        members.sort(key=lambda i: (i.opened_at, i.id))
        open_id = open_for.get((service, symptom))
        unexplained = tuple(i.id for i in members if i.problem_id is None)
        if open_id is None and len(unexplained) < threshold:
            unexplained = ()
        found.append(
            Recurrence(service, symptom, tuple(i.id for i in members), unexplained, open_id)
        )
    found.sort(key=lambda r: (-len(r.incident_ids), r.service, r.symptom))
    return found
