"""Problems in the records: recurring incidents linked to the problem that explains them.

Problem Management's tables live here, known errors' included (a problem lists its known
errors); `itsm.store.known_errors` records and applies known errors. Linking an incident to a
problem sets the incident's `problem_id` in the same transaction as the problem's audit row,
so the two records never disagree.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.exc import IntegrityError

from opsflow.errors import PermanentError
from opsflow.itsm.problems import (
    OPEN_PROBLEM_STATES,
    PROBLEM_NUMBERING,
    PROBLEM_STATES,
    Problem,
    ProblemUpdate,
    apply_problem_update,
)
from opsflow.itsm.records import Incident
from opsflow.itsm.store.db import Database, Id, Json, UtcDateTime, metadata, require_aware
from opsflow.itsm.store.errors import ConcurrentUpdateError
from opsflow.itsm.store.incidents import INCIDENTS, incidents
from opsflow.itsm.store.record_store import UpdateStore
from opsflow.itsm.store.record_table import RETRIES, RecordTable, versioned_table

problems = versioned_table(
    "problems",
    Column("service", String(255), nullable=False),
    Column("symptom", String(128), nullable=False),
    Column("summary", Text, nullable=False),
    Column("state", String(32), nullable=False),
    Column("root_cause", Text),
    Column("resolution_notes", Text),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    states=PROBLEM_STATES,
)
# One open problem per service and symptom, even when two reviews run at once.
Index(
    "uq_problems_open_signature",
    problems.c.service,
    problems.c.symptom,
    unique=True,
    sqlite_where=problems.c.state.in_(OPEN_PROBLEM_STATES),
    postgresql_where=problems.c.state.in_(OPEN_PROBLEM_STATES),
)

known_errors = versioned_table(
    "known_errors",
    Column("service", String(255), nullable=False),
    Column("symptom", String(128), nullable=False),
    Column("host", String(255)),
    Column("labels", Json, nullable=False),
    Column("root_cause", Text, nullable=False),
    Column("workaround", String(255), nullable=False),
    Column("problem_id", Id, ForeignKey("problems.id")),
    Column("times_applied", Integer, nullable=False, default=0),
    Column("times_worked", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime),
    CheckConstraint("times_worked <= times_applied", name="ck_known_errors_counts"),
)
Index("ix_known_errors_signature", known_errors.c.service, known_errors.c.symptom)

known_error_outcomes = Table(
    "known_error_outcomes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("known_error_id", Id, ForeignKey("known_errors.id"), nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id"), nullable=False),
    Column("worked", Boolean, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # One outcome per incident: recording it again corrects it instead of counting twice.
    UniqueConstraint("known_error_id", "incident_id", name="uq_known_error_outcomes"),
)


def with_links(conn: Connection, rows: list[dict[str, Any]]) -> list[Problem]:
    """Problems from rows, each with the ids of its incidents and known errors."""
    ids = [row["id"] for row in rows]
    linked: dict[int, list[int]] = {i: [] for i in ids}
    errors: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        query = (
            select(incidents.c.problem_id, incidents.c.id)
            .where(incidents.c.problem_id.in_(ids))
            .order_by(incidents.c.opened_at, incidents.c.id)
        )
        for problem_id, incident_id in conn.execute(query):
            linked[problem_id].append(incident_id)
        query = (
            select(known_errors.c.problem_id, known_errors.c.id)
            .where(known_errors.c.problem_id.in_(ids))
            .order_by(known_errors.c.id)
        )
        for problem_id, known_error_id in conn.execute(query):
            errors[problem_id].append(known_error_id)
    return [
        Problem.model_validate(
            {**row, "incident_ids": linked[row["id"]], "known_error_ids": errors[row["id"]]}
        )
        for row in rows
    ]


PROBLEMS = RecordTable(problems, Problem, "problem", numbering=PROBLEM_NUMBERING, load=with_links)
"""Problems as versioned, audited records, each read with its incidents and known errors."""


class IncidentLinkError(PermanentError, ValueError):
    """An incident cannot be linked as asked (it belongs to another problem, or it is Closed)."""


@dataclass(frozen=True)
class ProblemChange:
    """What `record_recurrence` did: the problem, whether it is new, the incidents it linked."""

    problem: Problem
    created: bool
    linked: tuple[int, ...]


class Problems(UpdateStore[Problem, ProblemUpdate]):
    """The problems of `db`, each read with its incidents and known errors; safe to share
    between threads."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, PROBLEMS, apply_problem_update)

    def list(
        self,
        state: Sequence[str] | None = None,
        service: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Problem]:
        """Problems matching every filter given, newest first."""
        return self.page(limit=limit, offset=offset, state=state, service=service)

    def list_open(self) -> builtins.list[Problem]:
        """Every problem still collecting incidents."""
        return self.list(state=OPEN_PROBLEM_STATES, limit=10_000)

    def record_recurrence(
        self,
        service: str,
        symptom: str,
        incident_ids: Sequence[int],
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> ProblemChange:
        """Link recurring incidents to the open problem for service and symptom, or open one.

        Incidents already explained by a problem are left where they are, so running the
        same review twice links nothing the second time.
        """
        require_aware(now, "now")
        for _attempt in range(RETRIES):
            try:
                with self.db.write() as conn:
                    return self._record_recurrence(
                        conn, service, symptom, incident_ids, actor, now, flow_run_id
                    )
            except IntegrityError as exc:
                if not _is_open_signature_violation(exc):
                    raise
                # Another review opened it first: the next attempt adds to theirs.
        raise ConcurrentUpdateError("problem", f"{service}/{symptom}", RETRIES)

    def _record_recurrence(
        self,
        conn: Connection,
        service: str,
        symptom: str,
        incident_ids: Sequence[int],
        actor: str,
        now: datetime,
        flow_run_id: str | None,
    ) -> ProblemChange:
        query = select(problems.c.id).where(
            problems.c.service == service,
            problems.c.symptom == symptom,
            problems.c.state.in_(OPEN_PROBLEM_STATES),
        )
        problem_id = conn.execute(query.with_for_update()).scalar_one_or_none()
        created = problem_id is None
        if problem_id is None:
            values = {
                "service": service,
                "symptom": symptom,
                "summary": f"{symptom} of {service} keeps recurring",
                "state": "New",
                "opened_at": now,
                "updated_at": now,
            }
            opened = PROBLEMS.insert(conn, values, actor, now, "opened", flow_run_id)
            problem_id = opened.id
        linked = []
        for incident_id in incident_ids:
            incident = INCIDENTS.fetch(conn, incident_id, lock=True)
            if incident.problem_id is not None:
                continue
            link_incident_fields(
                conn,
                incident,
                {"problem_id": problem_id},
                "problem_linked",
                actor,
                now,
                flow_run_id,
            )
            linked.append(incident.id)
        if linked:
            linked_ids = {"incident_ids": linked}
            PROBLEMS.note(
                conn, problem_id, actor, "incidents_linked", None, linked_ids, now, flow_run_id
            )
        return ProblemChange(PROBLEMS.fetch(conn, problem_id), created, tuple(linked))

    def link_incident(
        self,
        problem: int | str,
        incident: int | str,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> Problem:
        """Say that a problem explains an incident (sets `incidents.problem_id`); idempotent.

        Raises:
            IncidentLinkError: the incident belongs to another problem, or the problem is Closed.
        """
        require_aware(now, "now")
        with self.db.write() as conn:
            found = PROBLEMS.fetch(conn, problem, lock=True)
            record = INCIDENTS.fetch(conn, incident, lock=True)
            if record.problem_id == found.id:
                return found
            if record.problem_id is not None:
                raise IncidentLinkError(
                    f"{record.number} is already explained by problem {record.problem_id}"
                )
            if found.state == "Closed":
                raise IncidentLinkError(f"{found.number} is Closed; open a new problem instead")
            link_incident_fields(
                conn, record, {"problem_id": found.id}, "problem_linked", actor, now, flow_run_id
            )
            incident_ids = {"incident_ids": [record.id]}
            PROBLEMS.note(
                conn, found.id, actor, "incidents_linked", None, incident_ids, now, flow_run_id
            )
            return PROBLEMS.fetch(conn, found.id)


def change_problem(
    conn: Connection,
    before: Problem,
    change: ProblemUpdate,
    actor: str,
    now: datetime,
    flow_run_id: str | None,
) -> Problem:
    """Apply `change` to a problem read under the lock, through its state machine, audited."""
    after = apply_problem_update(before, change, now)
    if after is before:
        return before
    return PROBLEMS.write(conn, before, after, actor, now, flow_run_id)


def _is_open_signature_violation(exc: IntegrityError) -> bool:
    message = str(exc.orig)
    return "uq_problems_open_signature" in message or "problems.service" in message


def link_incident_fields(
    conn: Connection,
    before: Incident,
    links: dict[str, Any],
    action: str,
    actor: str,
    now: datetime,
    flow_run_id: str | None,
) -> Incident:
    """Set an incident's links (`problem_id`, `known_error_id`) on the incident read under the
    lock, as its next version, audited as `action`."""
    after = before.model_copy(update={**links, "updated_at": max(before.updated_at, now)})
    return INCIDENTS.write(conn, before, after, actor, now, flow_run_id, action)
