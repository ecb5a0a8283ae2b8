"""Problems and known errors through the desk: read problems, record and list known errors.

Mounted by `create_app` with `app.include_router(router)`; it uses the app's store and the
estate's people like every other desk route. Problems and known errors are operators' work
(they name incidents and hosts): other roles are refused (403). Refusals are the store's
permanent errors, which the app answers 404 (not found) or 409 (illegal move, duplicate,
unknown workaround).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from opsflow.desk.api.schema import Limit, Offset
from opsflow.desk.deps import CurrentEstate, KnownErrors, Operator, Problems
from opsflow.inventory.models import Estate
from opsflow.itsm.problems import (
    KnownError,
    KnownErrorCreate,
    Problem,
    ProblemState,
    ProblemUpdate,
    UnknownRunbookError,
    check_workaround,
)

router = APIRouter(prefix="/api/v1", tags=["problems"])


def workaround_runbooks(estate: Estate) -> list[str]:
    """The runbooks a known error's workaround may name: every runbook restoration can run,
    the shipped ones and those the estate declares."""
    return sorted(estate.runbook_names)


@router.get("/problems")
def list_problems(
    person: Operator,
    problems: Problems,
    state: Annotated[list[ProblemState] | None, Query()] = None,
    service: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[Problem]:
    """Problems, newest first, each with the incidents it explains; filter by state or service."""
    return problems.list(state=state, service=service, limit=limit, offset=offset)


@router.get("/problems/{problem_id}")
def show_problem(problem_id: str, person: Operator, problems: Problems) -> Problem:
    """One problem by id or number (PRB0000001), with its incidents and known errors."""
    return problems.get(problem_id)


@router.patch("/problems/{problem_id}")
def update_problem(
    problem_id: str, body: ProblemUpdate, person: Operator, problems: Problems
) -> Problem:
    """Add root-cause notes or move the problem on; illegal moves are refused (409)."""
    return problems.update(problem_id, body, actor=person.name, now=datetime.now(UTC))


@router.get("/known-errors")
def list_known_errors(
    person: Operator,
    known_errors: KnownErrors,
    service: str | None = None,
    include_retired: bool = False,
) -> list[KnownError]:
    """Known errors with how often their workaround was applied and worked, oldest first."""
    return known_errors.list(service=service, include_retired=include_retired)


@router.post("/known-errors", status_code=status.HTTP_201_CREATED)
def add_known_error(
    body: KnownErrorCreate, person: Operator, known_errors: KnownErrors, estate: CurrentEstate
) -> KnownError:
    """Record a known error; triage applies its workaround to every new matching incident.

    The workaround must be a runbook opsflow can run (422 otherwise); a duplicate signature
    is refused (409).
    """
    available = workaround_runbooks(estate)
    try:
        check_workaround(body.workaround, available)
    except UnknownRunbookError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return known_errors.add(body, actor=person.name, now=datetime.now(UTC), runbooks=available)


@router.get("/known-errors/{known_error_id}")
def show_known_error(
    known_error_id: str, person: Operator, known_errors: KnownErrors
) -> KnownError:
    """One known error by id or number (KE0000001)."""
    return known_errors.get(known_error_id)
