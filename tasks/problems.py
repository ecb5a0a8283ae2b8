"""Read and change problems and known errors from flows, each change audited with the run."""

from __future__ import annotations

import threading
import weakref
from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NONE

from opsflow.itsm.problem_report import ReviewInput
from opsflow.itsm.problem_store import ProblemChange, ProblemStore
from opsflow.itsm.problems import KnownError, Recurrence, find_recurrences
from opsflow.itsm.store import Store
from opsflow.tasks.records import current_flow_run_id, open_store

_problem_stores: weakref.WeakKeyDictionary[Store, ProblemStore] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def open_problem_store() -> ProblemStore:
    """The process's problem store over `open_store()`, its tables created once."""
    store = open_store()
    with _lock:
        if store not in _problem_stores:
            _problem_stores[store] = ProblemStore(store)
        return _problem_stores[store]


@task(cache_policy=NONE, timeout_seconds=120)
def find_recurring_incidents(since: datetime, threshold: int) -> list[Recurrence]:
    """Incidents opened since `since`, grouped by service and symptom, with what to link."""
    problems = open_problem_store()
    return find_recurrences(
        problems.incidents_opened_since(since), problems.open_problems(), threshold
    )


@task(cache_policy=NONE, timeout_seconds=60)
def record_recurrence(service: str, symptom: str, incident_ids: list[int]) -> ProblemChange:
    """Open the problem for a recurring symptom or add the incidents to the open one."""
    return open_problem_store().record_recurrence(
        service,
        symptom,
        incident_ids,
        actor="problem-review",
        now=datetime.now(UTC),
        flow_run_id=current_flow_run_id(),
    )


@task(cache_policy=NONE, timeout_seconds=120)
def read_review(since: datetime, threshold: int, window_days: int) -> ReviewInput:
    """The records the review report shows, read after the review acted."""
    problems = open_problem_store()
    incidents = problems.incidents_opened_since(since)
    open_problems = problems.open_problems()
    linked_ids = {i.problem_id for i in incidents if i.problem_id is not None}
    shown = {p.id: p for p in open_problems}
    for problem_id in linked_ids - shown.keys():
        shown[problem_id] = problems.get_problem(problem_id)
    return ReviewInput(
        now=datetime.now(UTC),
        window_days=window_days,
        threshold=threshold,
        incidents=incidents,
        recurrences=find_recurrences(incidents, open_problems, threshold),
        problems=shown,
        known_errors=problems.list_known_errors(include_retired=True),
    )


@task(cache_policy=NONE, timeout_seconds=60)
def read_known_error(known_error_id: int) -> KnownError:
    """One known error by id."""
    return open_problem_store().get_known_error(known_error_id)


@task(cache_policy=NONE, timeout_seconds=60)
def record_workaround_outcome(known_error_id: int, incident_id: int, worked: bool) -> KnownError:
    """Count whether a known error's workaround restored an incident's service (once each)."""
    return open_problem_store().record_workaround_outcome(
        known_error_id,
        worked,
        incident=incident_id,
        now=datetime.now(UTC),
        flow_run_id=current_flow_run_id(),
    )
