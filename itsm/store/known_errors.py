"""Known errors in the records: diagnosed faults whose workaround triage applies, and how it did.

A known error's signature (service, symptom, optionally host and labels) matches incidents
and events; recording one moves its problem on to Known Error; each application of its
workaround is counted once per incident, correctable.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from opsflow.errors import PermanentError
from opsflow.itsm.problems import (
    KNOWN_ERROR_NUMBERING,
    PROBLEM_STATES,
    KnownError,
    KnownErrorCreate,
    ProblemUpdate,
    check_workaround,
    match_known_error,
)
from opsflow.itsm.records import Incident
from opsflow.itsm.store.db import Database, require_aware
from opsflow.itsm.store.incidents import INCIDENTS
from opsflow.itsm.store.problems import (
    PROBLEMS,
    change_problem,
    known_error_outcomes,
    known_errors,
    link_incident_fields,
    problems,
)
from opsflow.itsm.store.record_store import RecordStore
from opsflow.itsm.store.record_table import RecordTable

KNOWN_ERRORS = RecordTable(
    known_errors, KnownError, "known_error", "known error", KNOWN_ERROR_NUMBERING
)
"""Known errors as versioned, audited records."""


class DuplicateKnownErrorError(PermanentError, ValueError):
    """An active known error with the same signature exists already."""


class KnownErrors(RecordStore[KnownError]):
    """The known errors of `db`; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, KNOWN_ERRORS)

    def add(
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
        require_aware(now, "now")
        check_workaround(create.workaround, runbooks)
        with self.db.write() as conn:
            problem = None
            if create.problem is not None:
                problem = PROBLEMS.fetch(conn, create.problem, lock=True)
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
            }
            known_error = KNOWN_ERRORS.insert(conn, values, actor, now, "added", flow_run_id)
            if problem is not None and problem.state in ("New", "Root Cause Analysis"):
                notes = problem.root_cause or create.root_cause
                for step in PROBLEM_STATES.path(problem.state, "Known Error", problem.number):
                    problem = change_problem(
                        conn,
                        problem,
                        ProblemUpdate(state=step, root_cause=notes),
                        actor,
                        now,
                        flow_run_id,
                    )
            return known_error

    def list(self, service: str | None = None, include_retired: bool = False) -> list[KnownError]:
        """Known errors, oldest first; retired ones only when asked."""
        query = select(known_errors)
        if service is not None:
            query = query.where(known_errors.c.service == service)
        if not include_retired:
            query = query.where(known_errors.c.retired_at.is_(None))
        return self.read(query.order_by(known_errors.c.id))

    def active(self) -> builtins.list[KnownError]:
        """Every known error triage applies, for matching a whole batch of events in memory."""
        return self.list()

    def _active(self, conn: Connection, service: str, symptom: str) -> builtins.list[KnownError]:
        query = select(known_errors).where(
            known_errors.c.service == service,
            known_errors.c.symptom == symptom,
            known_errors.c.retired_at.is_(None),
        )
        return [KnownError.model_validate(dict(row)) for row in conn.execute(query).mappings()]

    def match(
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
        with self.db.read() as conn:
            candidates = self._active(conn, service, symptom)
        return match_known_error(candidates, service, symptom, host, labels)

    def link_incident(
        self,
        incident: int | str,
        known_error: int | str,
        actor: str,
        now: datetime,
        flow_run_id: str | None = None,
    ) -> Incident:
        """Link an incident to the known error it shows, and to its problem when it has none."""
        require_aware(now, "now")
        with self.db.write() as conn:
            found = KNOWN_ERRORS.fetch(conn, known_error)
            record = INCIDENTS.fetch(conn, incident, lock=True)
            changes: dict[str, Any] = {"known_error_id": found.id}
            if record.problem_id is None and found.problem_id is not None:
                state = conn.execute(
                    select(problems.c.state).where(problems.c.id == found.problem_id)
                ).scalar_one()
                if state != "Closed":
                    changes["problem_id"] = found.problem_id
            if all(getattr(record, name) == value for name, value in changes.items()):
                return record
            return link_incident_fields(
                conn, record, changes, "known_error_linked", actor, now, flow_run_id
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
        require_aware(now, "now")
        with self.db.write() as conn:
            before = KNOWN_ERRORS.fetch(conn, known_error, lock=True)
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
                }
            )
            action = "workaround_" + ("worked" if worked else "failed")
            return KNOWN_ERRORS.write(conn, before, after, actor, now, flow_run_id, action)

    def retire(
        self, known_error: int | str, actor: str, now: datetime, flow_run_id: str | None = None
    ) -> KnownError:
        """Stop applying a known error (its fault is fixed); retiring it twice changes nothing."""
        require_aware(now, "now")
        with self.db.write() as conn:
            before = KNOWN_ERRORS.fetch(conn, known_error, lock=True)
            if before.retired_at is not None:
                return before
            after = before.model_copy(update={"retired_at": now, "updated_at": now})
            return KNOWN_ERRORS.write(conn, before, after, actor, now, flow_run_id, "retired")
