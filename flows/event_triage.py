"""Event Management: triage a micro-batch of stored events into incidents, decisions audited.

A worker runs this flow whenever new events are stored (at most a few runs a second, each
taking every pending event), so a storm of alerts costs a handful of flow runs, not one each.
"""

from __future__ import annotations

from collections import Counter

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from opsflow.flows.work import restore_soon
from opsflow.itsm.store.events import TRIAGE_BYTE_BUDGET
from opsflow.itsm.triage import RESTORING_ACTIONS
from opsflow.tasks.events import emit_incident_events, triage_pending_events
from opsflow.tasks.inventory import read_estate

ARTIFACT_ROWS = 200
"""Decisions shown in the artifact (failed ones first); a storm's counts are in its description."""


@flow(name="event-triage", persist_result=False)
def event_triage(limit: int = 20_000, max_bytes: int = TRIAGE_BYTE_BUDGET) -> list[dict]:
    """Classify, correlate and open incidents for pending events; start their runbooks.
    Returns how many events went each way, by class and action (empty: none was pending).

    The runbooks start as soon as the decisions are stored, before this run reports them:
    in a worker, in its own threads while it has room, else in another worker. The
    decisions themselves are in the records and, the first 200, in the run's artifact: a
    storm's 20,000 as the return value kept the engine ~0.4 s walking them for futures
    (py-spy of a worker in bench.intake).

    Args:
        limit: most events to take in this run.
        max_bytes: most bytes of event labels, annotations and summaries to load.
    """
    logger = get_run_logger()
    estate = read_estate.fn()
    decisions = triage_pending_events.fn(estate, limit, max_bytes)
    if not decisions:
        return []
    for decision in decisions:
        if decision.action in RESTORING_ACTIONS and decision.runbook:
            restore_soon()
    per_incident = Counter(d.incident_id for d in decisions if d.incident_id is not None)
    opened = {d.incident_id for d in decisions if d.action == "opened"}
    emit_incident_events(
        [
            (incident_id, "opened" if incident_id in opened else "updated", count)
            for incident_id, count in per_incident.items()
        ]
    )
    actions = Counter(d.action for d in decisions)
    failed = [d for d in decisions if d.action == "failed"]
    for decision in failed[:ARTIFACT_ROWS]:
        logger.warning("event %d failed triage: %s", decision.event_id, decision.reason)
    shown = failed + [d for d in decisions if d.action != "failed"]
    rows = [
        {
            "event": d.event_id,
            "class": d.event_class or "",
            "rule": d.rule,
            "action": d.action,
            "incident": d.incident_number or "",
            "runbook": d.runbook or "",
            "known error": d.known_error or "",
            "reason": d.reason or "",
        }
        for d in shown[:ARTIFACT_ROWS]
    ]
    create_table_artifact(
        key="event-triage",
        table=rows,
        description=f"{len(decisions)} events: "
        + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())),
    )
    logger.info("triaged %d events: %s", len(decisions), dict(actions))
    ways = Counter((d.event_class or "none", d.action) for d in decisions)
    return [
        {"event_class": event_class, "action": action, "events": count}
        for (event_class, action), count in sorted(ways.items())
    ]
