"""The problem-review flow on the session's store and Prefect server: problems and its report."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from opsflow.flows.problem_review import problem_review
from opsflow.itsm.store.records import open_records
from tests.support.factories import failure


async def latest_artifact(key: str):
    async with get_client() as client:
        [artifact] = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return artifact


@pytest.fixture
def service() -> str:
    """A service name of this test's own, so incidents other tests left do not count."""
    return f"review-{uuid4().hex[:8]}"


def test_review_opens_a_problem_once_and_publishes_the_report(lab, prefect_server, service) -> None:
    store = open_records()
    start = datetime.now(UTC) - timedelta(hours=3)
    ids = [
        failure(store, host="lab01", service=service, at=start + timedelta(minutes=i)).id
        for i in range(3)
    ]
    failure(store, host="lab01", service=service, symptom="slow", at=start)

    result = problem_review(window_days=7, threshold=3)

    [problem] = open_records().problems.list(service=service)
    assert (problem.symptom, problem.state, problem.incident_ids) == ("service-down", "New", ids)
    assert problem.number in result["problems_opened"]
    assert result["incidents_linked"][problem.number] == [
        store.incidents.get(i).number for i in ids
    ]
    report = asyncio.run(latest_artifact("problem-review")).data
    assert f"| {problem.number} (new) | New | {service} / service-down |" in report
    assert "data:image/svg+xml;base64," in report and "## SLA breaches" in report
    chart = asyncio.run(latest_artifact("problem-review-chart"))
    assert chart.type == "image" and chart.data.startswith("data:image/svg+xml;base64,")

    again = problem_review(window_days=7, threshold=3)
    assert problem.number not in again["incidents_linked"]
    assert open_records().problems.get(problem.id).incident_ids == ids


def test_review_refuses_a_threshold_that_is_no_recurrence(lab, prefect_server) -> None:
    with pytest.raises(ValueError, match="threshold >= 2"):
        problem_review(window_days=7, threshold=1)
