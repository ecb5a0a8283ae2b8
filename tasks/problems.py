"""Read and change problems and known errors from flows, each change audited with the run."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NONE

from opsflow.itsm.problem_report import ReviewInput
from opsflow.itsm.problems import KnownError, Recurrence, find_recurrences
from opsflow.itsm.store.problems import ProblemChange
from opsflow.itsm.store.records import open_records
from opsflow.tasks.records import current_flow_run_id


@task(cache_policy=NONE, timeout_seconds=120)
def find_recurring_incidents(since: datetime, threshold: int) -> list[Recurrence]:
    """Incidents opened since `since`, grouped by service and symptom, with what to link."""
    records = open_records()
    return find_recurrences(
        records.incidents.opened_since(since), records.problems.list_open(), threshold
    )


@task(cache_policy=NONE, timeout_seconds=60)
def record_recurrence(service: str, symptom: str, incident_ids: list[int]) -> ProblemChange:
    """Open the problem for a recurring symptom or add the incidents to the open one."""
    return open_records().problems.record_recurrence(
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
    records = open_records()
    incidents = records.incidents.opened_since(since)
    open_problems = records.problems.list_open()
    linked_ids = {i.problem_id for i in incidents if i.problem_id is not None}
    shown = {p.id: p for p in open_problems}
    for problem_id in linked_ids - shown.keys():
        shown[problem_id] = records.problems.get(problem_id)
    return ReviewInput(
        now=datetime.now(UTC),
        window_days=window_days,
        threshold=threshold,
        incidents=incidents,
        recurrences=find_recurrences(incidents, open_problems, threshold),
        problems=shown,
        known_errors=records.known_errors.list(include_retired=True),
        releases=records.releases.with_incidents(since),
    )


@task(cache_policy=NONE, timeout_seconds=60)
def read_known_error(known_error_id: int) -> KnownError:
    """One known error by id."""
    return open_records().known_errors.get(known_error_id)


@task(cache_policy=NONE, timeout_seconds=60)
def record_workaround_outcome(known_error_id: int, incident_id: int, worked: bool) -> KnownError:
    """Count whether a known error's workaround restored an incident's service (once each)."""
    return open_records().known_errors.record_workaround_outcome(
        known_error_id,
        worked,
        incident=incident_id,
        now=datetime.now(UTC),
        flow_run_id=current_flow_run_id(),
    )
