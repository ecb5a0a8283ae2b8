"""Problem Management: recurring incidents open a problem; the review is published as a report.

Scheduled hourly (`problem-review` in prefect.yaml) and runnable now. Incidents of one
service with one symptom that recur `threshold` times within `window_days` open a problem
linking them, or join the problem already open for that pair; the run then publishes a
markdown report (recurring symptoms with a chart, incidents per service, time to restore
and SLA breaches per priority, known errors) as the `problem-review` artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.logging import get_run_logger

from opsflow.itsm.problem_report import recurrence_chart, render_review, svg_data_uri
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.problems import find_recurring_incidents, read_review, record_recurrence

DEFAULT_THRESHOLD = 3
"""Incidents of one service and symptom that make a problem, unless the estate says otherwise."""

DEFAULT_WINDOW_DAYS = 7
"""How far back the review looks, unless the estate says otherwise."""


@flow(name="problem-review")
def problem_review(window_days: int | None = None, threshold: int | None = None) -> dict:
    """Open or extend problems for recurring incidents and publish the problem review report.

    Args:
        window_days: how many days back to look; default the estate's `problem_window_days`.
        threshold: incidents of one service and symptom that make a problem; default the
            estate's `problem_threshold`.

    Returns the numbers of the problems opened and of the incidents linked to each problem,
    and the report's markdown.
    """
    logger = get_run_logger()
    settings = read_estate().settings
    # getattr: the estate settings gain these fields with Problem Management; older estates
    # (and settings models) fall back to the defaults.
    if window_days is None:
        window_days = getattr(settings, "problem_window_days", DEFAULT_WINDOW_DAYS)
    if threshold is None:
        threshold = getattr(settings, "problem_threshold", DEFAULT_THRESHOLD)
    if window_days < 1 or threshold < 2:
        raise ValueError(
            f"need window_days >= 1 and threshold >= 2, got {window_days} and {threshold}"
        )
    since = datetime.now(UTC) - timedelta(days=window_days)
    recurrences = find_recurring_incidents(since, threshold)
    opened: list[int] = []
    linked: dict[int, Sequence[int]] = {}
    for recurrence in recurrences:
        if not recurrence.needs_action:
            continue
        change = record_recurrence(recurrence.service, recurrence.symptom, list(recurrence.to_link))
        if change.created:
            opened.append(change.problem.id)
        if change.linked:
            linked[change.problem.id] = change.linked
            logger.info(
                "%s %s: linked %d incidents (%s/%s)",
                change.problem.number,
                "opened" if change.created else "updated",
                len(change.linked),
                recurrence.service,
                recurrence.symptom,
            )
    review = replace(
        read_review(since, threshold, window_days), opened=tuple(opened), linked=linked
    )
    markdown = render_review(review)
    numbers = {i.id: i.number for i in review.incidents}
    summary = (
        f"{len(review.incidents)} incidents in {window_days} days; "
        f"{len(opened)} problems opened, {sum(len(v) for v in linked.values())} incidents linked"
    )
    create_markdown_artifact(key="problem-review", markdown=markdown, description=summary)
    create_image_artifact(
        image_url=svg_data_uri(recurrence_chart(review)),
        key="problem-review-chart",
        description=f"Incidents per service and symptom, last {window_days} days",
    )
    logger.info("problem review: %s", summary)
    return {
        "window_days": window_days,
        "threshold": threshold,
        "problems_opened": [review.problems[p].number for p in opened],
        "incidents_linked": {
            review.problems[p].number: [numbers.get(i, str(i)) for i in ids]
            for p, ids in linked.items()
        },
        "report": markdown,
    }


if __name__ == "__main__":
    problem_review()
