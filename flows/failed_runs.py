"""Page the on-call when a flow run of an ITIL process fails or crashes.

`prefect.yaml` starts this flow from a trigger on Prefect's own `prefect.flow-run.Failed`
and `prefect.flow-run.Crashed` events of runs tagged `itil:*`, so a restoration, a
fulfillment or an access change that dies is a page, not a red dot in the UI someone may
see. Its own deployment is not tagged `itil:*`: a page that fails pages nobody again.

A storm of failures (a deleted credentials block failing forty restorations) is two pages,
not forty: the first failure pages at once and opens the estate's grouping window
(`page_grouping_minutes`); the failures within it are held in the records, and the run that
opened the window sends them as one digest when it ends. If that run died, the next failure
after the window sends what was left first (`itsm.store.paging`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as this_run

from opsflow.inventory.models import Estate
from opsflow.itsm.store.paging import FailedRunPages, HeldFailure
from opsflow.itsm.store.records import open_records
from opsflow.tasks.flow_runs import FlowRunSummary, read_flow_run
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.notify import notify_on_call

ITIL_TAG_PREFIX = "itil:"
CLAIM_S = 600.0
"""How long a sender holds the failures it pages before another may send them (it died)."""
DIGEST_RUNS = 20
"""Runs a digest links by name; the rest are counted."""
DIGEST_REASONS = 20
"""Distinct reasons a digest quotes; the rest are counted."""
REASON_CHARS = 300
"""A reason is quoted on one line of at most this many characters."""


@flow(name="page-on-failed-run")
def page_on_failed_run(flow_run: str) -> str:
    """Tell the on-call of the estate's `default_team` which run failed, of which process,
    and why (its state's message), at once or in the digest of the open grouping window;
    returns who was paged, or why not yet.

    Args:
        flow_run: the run's id, or its event resource id (`prefect.flow-run.<id>`).
    """
    logger = get_run_logger()
    run = read_flow_run(flow_run)
    estate = read_estate()
    team = estate.settings.default_team
    window = timedelta(minutes=estate.settings.page_grouping_minutes)
    pages = open_records().paging
    holder = f"page-on-failed-run:{this_run.id}"
    decision = pages.record(team, run.id, run.model_dump(), window, holder, CLAIM_S)
    if decision.leftovers:
        logger.info("sending %d failures a dead run held", len(decision.leftovers))
        try:
            send_digest(pages, estate, team, holder, decision.leftovers)
        except BaseException:
            pages.release([decision.failure.id], holder)  # its own page waits with them
            raise
    if decision.outcome == "repeat":
        logger.info("%s was recorded for a page before: not paged again", run.name)
        return f"{run.name} was already recorded for a page"
    end = decision.failure.window_end
    if decision.outcome == "held":
        logger.info("holding %s for %s's digest at %s", run.name, team, end.isoformat())
        return f"held for {team}'s digest at {end.isoformat()}"
    subject, body = run_page(run, end if window else None)
    logger.info("paging about %s (%s)", run.name, run.state)
    paged = send_page(pages, estate, team, holder, [decision.failure], subject, body)
    if window:
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
        if due := pages.claim_due(team, holder, CLAIM_S):
            send_digest(pages, estate, team, holder, due)
    return paged


def run_page(run: FlowRunSummary, window_end: datetime | None) -> tuple[str, str]:
    """The subject and body of the page about one failed run; with `window_end`, the body
    says that failures until then come as one digest."""
    processes = processes_of(run)
    where = f"deployment {run.deployment}" if run.deployment else "no deployment"
    subject = f"opsflow: {run.name} {run.state} ({', '.join(processes) or run.flow})"
    lines = [
        f"Flow run {run.name} of flow {run.flow} ({where}) is {run.state}.",
        f"Process: {', '.join(processes) or 'none tagged'}; tags: {', '.join(run.tags)}.",
        f"Why: {run.message or 'no message'}",
        f"Run: {run.url or run.id}",
    ]
    if window_end is not None:
        until = window_end.strftime("%H:%M:%S UTC")
        lines.append(f"Further failed runs until {until} come in one digest page then.")
    return subject, "\n".join(lines)


def digest_page(runs: list[FlowRunSummary]) -> tuple[str, str]:
    """The subject and body of one page about the failed runs held in a grouping window: how
    many, of which processes and deployments, why (reasons counted) and where."""
    processes = Counter(p for run in runs for p in processes_of(run) or [run.flow])
    deployments = Counter(run.deployment or "no deployment" for run in runs)
    reasons = Counter(one_line(run.message) or "no message" for run in runs)
    many = f"{len(runs)} more failed run{'' if len(runs) == 1 else 's'}"
    subject = f"opsflow: {many} ({', '.join(sorted(processes))})"
    lines = [
        f"{many} of ITIL processes (failed or crashed), held for this page.",
        f"Processes: {counted(processes.items())}.",
        f"Deployments: {counted(deployments.items())}.",
        "Reasons:",
        *(f"  {n} x {reason}" for reason, n in reasons.most_common(DIGEST_REASONS)),
        *more(len(reasons) - DIGEST_REASONS, "other reasons"),
        "Runs:",
        *(f"  {run.name} ({run.state}): {run.url or run.id}" for run in runs[:DIGEST_RUNS]),
        *more(len(runs) - DIGEST_RUNS, "more"),
    ]
    return subject, "\n".join(lines)


def send_page(
    pages: FailedRunPages,
    estate: Estate,
    team: str,
    holder: str,
    failures: list[HeldFailure],
    subject: str,
    body: str,
) -> str:
    """Page `team`'s on-call about the `failures` `holder` claimed and mark them sent; if the
    page cannot go, give them back for the next sender and fail."""
    ids = [f.id for f in failures]
    try:
        paged = notify_on_call(estate, team, subject, body)
    except BaseException:
        pages.release(ids, holder)
        raise
    pages.mark_sent(ids, holder, datetime.now(UTC))
    return paged


def send_digest(
    pages: FailedRunPages, estate: Estate, team: str, holder: str, failures: list[HeldFailure]
) -> str:
    """Send the failures `holder` claimed as one digest page; returns who was paged."""
    runs = [FlowRunSummary.model_validate(f.run) for f in failures]
    subject, body = digest_page(runs)
    get_run_logger().info("paging a digest of %d failed runs", len(runs))
    return send_page(pages, estate, team, holder, failures, subject, body)


def processes_of(run: FlowRunSummary) -> list[str]:
    """The ITIL processes a run's tags name (`itil:incident` -> `incident`)."""
    return [t.removeprefix(ITIL_TAG_PREFIX) for t in run.tags if t.startswith(ITIL_TAG_PREFIX)]


def one_line(text: str) -> str:
    """`text` (untrusted: a run's message) as one line of at most REASON_CHARS characters, so
    it cannot pose as further lines of the digest."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= REASON_CHARS else flat[: REASON_CHARS - 3] + "..."


def counted(items: Iterable[tuple[str, int]]) -> str:
    """`name (n)` pairs, most first, then by name."""
    return ", ".join(f"{name} ({n})" for name, n in sorted(items, key=lambda i: (-i[1], i[0])))


def more(n: int, what: str) -> list[str]:
    """The line counting what a list left out, if it left anything out."""
    return [f"  and {n} {what}"] if n > 0 else []


if __name__ == "__main__":
    import sys

    page_on_failed_run(sys.argv[1])
