"""Problems and known errors in the records store, every change audited in its own transaction.

The tables live on `itsm.store.metadata` beside the incidents they explain: linking an
incident to a problem or a known error sets the incident's `problem_id` or `known_error_id`
in the same transaction as the problem's audit row, through the store's own connection, so
the two records never disagree.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
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
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from opsflow.errors import PermanentError
from opsflow.itsm.problems import (
    KNOWN_ERROR_NUMBERING,
    OPEN_PROBLEM_STATES,
    PROBLEM_NUMBERING,
    PROBLEM_STATES,
    KnownError,
    KnownErrorCreate,
    Problem,
    ProblemUpdate,
    apply_problem_update,
    check_workaround,
    match_known_error,
)
from opsflow.itsm.records import INCIDENT_NUMBERING, Incident
from opsflow.itsm.store import (
    ConcurrentUpdateError,
    RecordNotFoundError,
    StaleVersionError,
    Store,
    UtcDateTime,
    _Id,
    _Json,
    audit,
    incidents,
    metadata,
)

_RETRIES = 5

problems = Table(
    "problems",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
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
    Column("version", Integer, nullable=False, default=1),
    CheckConstraint(PROBLEM_STATES.sql_check(), name="ck_problems_state"),
    sqlite_autoincrement=True,  # never reuse a problem number
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

known_errors = Table(
    "known_errors",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("service", String(255), nullable=False),
    Column("symptom", String(128), nullable=False),
    Column("host", String(255)),
    Column("labels", _Json, nullable=False),
    Column("root_cause", Text, nullable=False),
    Column("workaround", String(255), nullable=False),
    Column("problem_id", _Id, ForeignKey("problems.id")),
    Column("times_applied", Integer, nullable=False, default=0),
    Column("times_worked", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime),
    Column("version", Integer, nullable=False, default=1),
    CheckConstraint("times_worked <= times_applied", name="ck_known_errors_counts"),
    sqlite_autoincrement=True,
)
Index("ix_known_errors_signature", known_errors.c.service, known_errors.c.symptom)

known_error_outcomes = Table(
    "known_error_outcomes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("known_error_id", _Id, ForeignKey("known_errors.id"), nullable=False),
    Column("incident_id", _Id, ForeignKey("incidents.id"), nullable=False),
    Column("worked", Boolean, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # One outcome per incident: recording it again corrects it instead of counting twice.
    UniqueConstraint("known_error_id", "incident_id", name="uq_known_error_outcomes"),
)

TABLES = [problems, known_errors, known_error_outcomes]
_PROBLEM_COLUMNS = [c.name for c in problems.columns if c.name != "id"]
_KNOWN_ERROR_COLUMNS = [c.name for c in known_errors.columns if c.name != "id"]


class IncidentLinkError(PermanentError, ValueError):
    """An incident cannot be linked as asked (it belongs to another problem, or it is Closed)."""


class DuplicateKnownErrorError(PermanentError, ValueError):
    """An active known error with the same signature exists already."""


@dataclass(frozen=True)
class ProblemChange:
    """What `record_recurrence` did: the problem, whether it is new, the incidents it linked."""

    problem: Problem
    created: bool
    linked: tuple[int, ...]


class ProblemStore:
    """Problems and known errors in `store`'s database; safe to share between threads."""

    def __init__(self, store: Store):
        self.store = store

    # -- problems -------------------------------------------------------------------------

    def get_problem(self, id_or_number: int | str) -> Problem:
        """One problem by id (7, "7") or number ("PRB0000007"), with its incidents."""
        with self.store.read() as conn:
            return self._fetch_problem(conn, id_or_number)

    def list_problems(
        self,
        state: Sequence[str] | None = None,
        service: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Problem]:
        """Problems matching every filter given, newest first."""
        query = select(problems)
        if state:
            query = query.where(problems.c.state.in_(list(state)))
        if service is not None:
            query = query.where(problems.c.service == service)
        query = query.order_by(problems.c.id.desc()).limit(limit).offset(offset)
        with self.store.read() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
            return self._with_links(conn, rows)

    def open_problems(self) -> list[Problem]:
        """Every problem still collecting incidents."""
        return self.list_problems(state=OPEN_PROBLEM_STATES, limit=10_000)

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
        _require_aware(now)
        for _attempt in range(_RETRIES):
            try:
                with self.store.write() as conn:
                    return self._record_recurrence(
                        conn, service, symptom, incident_ids, actor, now, flow_run_id
                    )
            except IntegrityError as exc:
                if not _is_open_signature_violation(exc):
                    raise
                # Another review opened it first: the next attempt adds to theirs.
        raise ConcurrentUpdateError("problem", f"{service}/{symptom}", _RETRIES)

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
                "version": 1,
            }
            problem_id = conn.execute(
                insert(problems).values(values).returning(problems.c.id)
            ).scalar_one()
            opened = Problem.model_validate({"id": problem_id, **values})
            _audit(
                conn, now, actor, "problem.opened", "problem", problem_id, None, opened, flow_run_id
            )
        linked = []
        for incident_id in incident_ids:
            incident = _fetch_incident(conn, incident_id, lock=True)
            if incident.problem_id is not None:
                continue
            _change_incident(
                conn,
                incident,
                {"problem_id": problem_id},
                "incident.problem_linked",
                actor,
                now,
                flow_run_id,
            )
            linked.append(incident.id)
        if linked:
            _audit(
                conn,
                now,
                actor,
                "problem.incidents_linked",
                "problem",
                problem_id,
                None,
                {"incident_ids": linked},
                flow_run_id,
            )
        return ProblemChange(self._fetch_problem(conn, problem_id), created, tuple(linked))

    def link_incident_to_problem(
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
        _require_aware(now)
        with self.store.write() as conn:
            found = self._fetch_problem(conn, problem, lock=True)
            record = _fetch_incident(conn, incident, lock=True)
            if record.problem_id == found.id:
                return found
            if record.problem_id is not None:
                raise IncidentLinkError(
                    f"{record.number} is already explained by problem {record.problem_id}"
                )
            if found.state == "Closed":
                raise IncidentLinkError(f"{found.number} is Closed; open a new problem instead")
            _change_incident(
                conn,
                record,
                {"problem_id": found.id},
                "incident.problem_linked",
                actor,
                now,
                flow_run_id,
            )
            _audit(
                conn,
                now,
                actor,
                "problem.incidents_linked",
                "problem",
                found.id,
                None,
                {"incident_ids": [record.id]},
                flow_run_id,
            )
            return self._fetch_problem(conn, found.id)

    def update_problem(
        self,
        problem: int | str,
        change: ProblemUpdate,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
        expected_version: int | None = None,
    ) -> Problem:
        """Move a problem through its state machine or add root-cause notes, audited.

        Raises:
            IllegalTransitionError, InvalidUpdateError: refused; nothing changes.
            StaleVersionError: `expected_version` is not the current version.
        """
        _require_aware(now)
        with self.store.write() as conn:
            before = self._fetch_problem(conn, problem, lock=True)
            if expected_version is not None and before.version != expected_version:
                raise StaleVersionError("problem", before.id, expected_version, before.version)
            return self._apply(conn, before, change, actor, now, flow_run_id)

    def _apply(
        self,
        conn: Connection,
        before: Problem,
        change: ProblemUpdate,
        actor: str,
        now: datetime,
        flow_run_id: str | None,
    ) -> Problem:
        after = apply_problem_update(before, change, now)
        if after is before:
            return before
        after = after.model_copy(update={"version": before.version + 1})
        result = conn.execute(
            update(problems)
            .where(problems.c.id == before.id, problems.c.version == before.version)
            .values(after.model_dump(include=set(_PROBLEM_COLUMNS)))
        )
        if result.rowcount != 1:
            raise ConcurrentUpdateError("problem", before.id, 1)
        action = (
            "problem." + after.state.lower().replace(" ", "_")
            if after.state != before.state
            else "problem.updated"
        )
        _audit(conn, now, actor, action, "problem", after.id, before, after, flow_run_id)
        return after

    def _fetch_problem(
        self, conn: Connection, id_or_number: int | str, lock: bool = False
    ) -> Problem:
        problem_id = PROBLEM_NUMBERING.parse(id_or_number)
        row = None
        if problem_id is not None:
            query = select(problems).where(problems.c.id == problem_id)
            row = conn.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            raise RecordNotFoundError("problem", id_or_number)
        return self._with_links(conn, [dict(row)])[0]

    def _with_links(self, conn: Connection, rows: list[dict[str, Any]]) -> list[Problem]:
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

    # -- known errors ---------------------------------------------------------------------

    def add_known_error(
        self,
        create: KnownErrorCreate,
        actor: str,
        now: datetime,
        runbooks: Collection[str],
        flow_run_id: str | None = None,
    ) -> KnownError:
        """Record a known error; its problem, if given, moves on to Known Error.

        Args:
            create: the signature, root cause, workaround and optional problem.
            actor: who records it.
            now: when.
            runbooks: the runbooks opsflow can run; the workaround must be one of them.
            flow_run_id: the flow run recording it, if any.

        Raises:
            UnknownRunbookError: the workaround is not a runbook opsflow can run.
            DuplicateKnownErrorError: an active known error has the same signature.
            RecordNotFoundError: the problem given does not exist.
        """
        _require_aware(now)
        check_workaround(create.workaround, runbooks)
        with self.store.write() as conn:
            problem = None
            if create.problem is not None:
                problem = self._fetch_problem(conn, create.problem, lock=True)
            for existing in self._active(conn, create.service, create.symptom):
                if (existing.host, existing.labels) == (create.host, create.labels):
                    raise DuplicateKnownErrorError(
                        f"{existing.number} already records this signature "
                        f"({create.service}/{create.symptom} on {create.host or 'any host'})"
                    )
            values = {
                **create.model_dump(exclude={"problem"}),
                "problem_id": problem.id if problem else None,
                "times_applied": 0,
                "times_worked": 0,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            new_id = conn.execute(
                insert(known_errors).values(values).returning(known_errors.c.id)
            ).scalar_one()
            known_error = KnownError.model_validate({"id": new_id, **values})
            _audit(
                conn,
                now,
                actor,
                "known_error.added",
                "known_error",
                new_id,
                None,
                known_error,
                flow_run_id,
            )
            if problem is not None and problem.state in ("New", "Root Cause Analysis"):
                notes = problem.root_cause or create.root_cause
                for step in PROBLEM_STATES.path(problem.state, "Known Error", problem.number):
                    problem = self._apply(
                        conn,
                        problem,
                        ProblemUpdate(state=step, root_cause=notes),
                        actor,
                        now,
                        flow_run_id,
                    )
            return known_error

    def get_known_error(self, id_or_number: int | str) -> KnownError:
        """One known error by id (3, "3") or number ("KE0000003")."""
        with self.store.read() as conn:
            return _fetch_known_error(conn, id_or_number)

    def list_known_errors(
        self, service: str | None = None, include_retired: bool = False
    ) -> list[KnownError]:
        """Known errors, oldest first; retired ones only when asked."""
        query = select(known_errors)
        if service is not None:
            query = query.where(known_errors.c.service == service)
        if not include_retired:
            query = query.where(known_errors.c.retired_at.is_(None))
        with self.store.read() as conn:
            rows = conn.execute(query.order_by(known_errors.c.id)).mappings().all()
        return [KnownError.model_validate(dict(row)) for row in rows]

    def active_known_errors(self) -> list[KnownError]:
        """Every known error triage applies, for matching a whole batch of events in memory."""
        return self.list_known_errors()

    def _active(self, conn: Connection, service: str, symptom: str) -> list[KnownError]:
        query = select(known_errors).where(
            known_errors.c.service == service,
            known_errors.c.symptom == symptom,
            known_errors.c.retired_at.is_(None),
        )
        return [KnownError.model_validate(dict(row)) for row in conn.execute(query).mappings()]

    def match_known_error(
        self,
        target: Incident | tuple[str | None, str, str | None],
        labels: dict[str, str] | None = None,
    ) -> KnownError | None:
        """The known error an incident, or a (service, symptom, host), shows, if any."""
        if isinstance(target, Incident):
            service, symptom, host = target.service, target.symptom, target.host
        else:
            service, symptom, host = target
        if service is None:
            return None
        with self.store.read() as conn:
            candidates = self._active(conn, service, symptom)
        return match_known_error(candidates, service, symptom, host, labels)

    def link_incident_to_known_error(
        self,
        incident: int | str,
        known_error: int | str,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> Incident:
        """Link an incident to the known error it shows, and to its problem when it has none."""
        _require_aware(now)
        with self.store.write() as conn:
            found = _fetch_known_error(conn, known_error)
            record = _fetch_incident(conn, incident, lock=True)
            changes: dict[str, Any] = {"known_error_id": found.id}
            if record.problem_id is None and found.problem_id is not None:
                state = conn.execute(
                    select(problems.c.state).where(problems.c.id == found.problem_id)
                ).scalar_one()
                if state != "Closed":
                    changes["problem_id"] = found.problem_id
            if all(getattr(record, name) == value for name, value in changes.items()):
                return record
            return _change_incident(
                conn, record, changes, "incident.known_error_linked", actor, now, flow_run_id
            )

    def record_workaround_outcome(
        self,
        known_error: int | str,
        worked: bool,
        incident: int | None = None,
        actor: str = "incident-restoration",
        now: datetime | None = None,
        flow_run_id: str | None = None,
    ) -> KnownError:
        """Count one application of a known error's workaround and whether it restored service.

        With `incident`, one outcome is kept per incident: recording it again changes
        nothing, and recording the opposite outcome corrects the count instead of adding one.
        """
        now = now or datetime.now(UTC)
        _require_aware(now)
        with self.store.write() as conn:
            before = _fetch_known_error(conn, known_error, lock=True)
            applied, worked_delta = 1, int(worked)
            if incident is not None:
                query = select(known_error_outcomes).where(
                    known_error_outcomes.c.known_error_id == before.id,
                    known_error_outcomes.c.incident_id == incident,
                )
                previous = conn.execute(query).mappings().first()
                if previous is not None:
                    if bool(previous["worked"]) == worked:
                        return before
                    applied, worked_delta = 0, 1 if worked else -1
                    conn.execute(
                        update(known_error_outcomes)
                        .where(known_error_outcomes.c.id == previous["id"])
                        .values(worked=worked, at=now)
                    )
                else:
                    conn.execute(
                        insert(known_error_outcomes).values(
                            known_error_id=before.id, incident_id=incident, worked=worked, at=now
                        )
                    )
            after = before.model_copy(
                update={
                    "times_applied": before.times_applied + applied,
                    "times_worked": before.times_worked + worked_delta,
                    "updated_at": now,
                    "version": before.version + 1,
                }
            )
            _write_known_error(conn, before, after)
            action = "known_error.workaround_" + ("worked" if worked else "failed")
            _audit(conn, now, actor, action, "known_error", after.id, before, after, flow_run_id)
            return after

    def retire_known_error(
        self, known_error: int | str, actor: str, now: datetime, flow_run_id: str | None = None
    ) -> KnownError:
        """Stop applying a known error (its fault is fixed); retiring it twice changes nothing."""
        _require_aware(now)
        with self.store.write() as conn:
            before = _fetch_known_error(conn, known_error, lock=True)
            if before.retired_at is not None:
                return before
            after = before.model_copy(
                update={"retired_at": now, "updated_at": now, "version": before.version + 1}
            )
            _write_known_error(conn, before, after)
            _audit(
                conn,
                now,
                actor,
                "known_error.retired",
                "known_error",
                after.id,
                before,
                after,
                flow_run_id,
            )
            return after

    # -- review ---------------------------------------------------------------------------

    def incidents_opened_since(self, since: datetime) -> list[Incident]:
        """Every incident opened at or after `since`, oldest first: the review's window."""
        _require_aware(since)
        query = (
            select(incidents)
            .where(incidents.c.opened_at >= since)
            .order_by(incidents.c.opened_at, incidents.c.id)
        )
        with self.store.read() as conn:
            return [Incident.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def _is_open_signature_violation(exc: IntegrityError) -> bool:
    message = str(exc.orig)
    return "uq_problems_open_signature" in message or "problems.service" in message


def _require_aware(value: datetime) -> None:
    if value.tzinfo is None:
        raise ValueError(f"datetimes must be timezone-aware, got {value!r}")


def _fetch_incident(conn: Connection, id_or_number: int | str, lock: bool = False) -> Incident:
    incident_id = INCIDENT_NUMBERING.parse(id_or_number)
    row = None
    if incident_id is not None:
        query = select(incidents).where(incidents.c.id == incident_id)
        row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise RecordNotFoundError("incident", id_or_number)
    return Incident.model_validate(dict(row))


def _change_incident(
    conn: Connection,
    before: Incident,
    changes: dict[str, Any],
    action: str,
    actor: str,
    now: datetime,
    flow_run_id: str | None,
) -> Incident:
    """Write link fields onto an incident read under the lock, bumping its version, audited."""
    after = before.model_copy(
        update={**changes, "updated_at": max(before.updated_at, now), "version": before.version + 1}
    )
    result = conn.execute(
        update(incidents)
        .where(incidents.c.id == before.id, incidents.c.version == before.version)
        .values({**changes, "updated_at": after.updated_at, "version": after.version})
    )
    if result.rowcount != 1:
        raise ConcurrentUpdateError("incident", before.id, 1)
    _audit(conn, now, actor, action, "incident", before.id, before, after, flow_run_id)
    return after


def _fetch_known_error(conn: Connection, id_or_number: int | str, lock: bool = False) -> KnownError:
    known_error_id = KNOWN_ERROR_NUMBERING.parse(id_or_number)
    row = None
    if known_error_id is not None:
        query = select(known_errors).where(known_errors.c.id == known_error_id)
        row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        raise RecordNotFoundError("known error", id_or_number)
    return KnownError.model_validate(dict(row))


def _write_known_error(conn: Connection, before: KnownError, after: KnownError) -> None:
    result = conn.execute(
        update(known_errors)
        .where(known_errors.c.id == before.id, known_errors.c.version == before.version)
        .values(after.model_dump(include=set(_KNOWN_ERROR_COLUMNS)))
    )
    if result.rowcount != 1:
        raise ConcurrentUpdateError("known error", before.id, 1)


def _audit(
    conn: Connection,
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    record_id: int,
    before: BaseModel | dict[str, Any] | None,
    after: BaseModel | dict[str, Any] | None,
    flow_run_id: str | None,
) -> None:
    """Append one audit row in the caller's transaction."""

    def dump(value: BaseModel | dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or isinstance(value, dict):
            return None if value is None else _jsonable(value)
        return value.model_dump(mode="json")

    conn.execute(
        insert(audit).values(
            at=at,
            actor=actor,
            action=action,
            record_type=record_type,
            record_id=record_id,
            before=dump(before),
            after=dump(after),
            flow_run_id=flow_run_id,
        )
    )


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
