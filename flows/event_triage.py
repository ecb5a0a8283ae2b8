"""Event Management: triage a micro-batch of stored events into incidents, decisions audited.

The desk starts this flow whenever new events are stored (at most a few runs a second, each
taking every pending event), so a storm of alerts costs a handful of flow runs, not one each.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger

from tasks.events import emit_incident_events, triage_pending_events
from tasks.inventory import read_estate

ARTIFACT_ROWS = 200
"""Decisions shown in the artifact; a storm's counts are in its description."""


@flow(name="event-triage")
def event_triage(limit: int = 20_000, start_restoration: bool = True) -> list[dict]:
    """Classify, correlate and open incidents for pending events; start their runbooks.

    Args:
        limit: most events to take in this run.
        start_restoration: run the incident-restoration deployment for each incident opened
            with a runbook (the desk passes False and starts restoration itself, faster).
    """
    logger = get_run_logger()
    estate = read_estate()
    decisions = triage_pending_events(estate, limit)
    if not decisions:
        return []
    per_incident = Counter(d.incident_id for d in decisions if d.incident_id is not None)
    opened = {d.incident_id for d in decisions if d.action == "opened"}
    emit_incident_events(
        [
            (incident_id, "opened" if incident_id in opened else "updated", count)
            for incident_id, count in per_incident.items()
        ]
    )
    if start_restoration:
        for decision in decisions:
            if decision.action == "opened" and decision.runbook:
                run_deployment(
                    "incident-restoration/incident-restoration",
                    parameters={"incident": decision.incident_number},
                    timeout=0,
                )
    actions = Counter(d.action for d in decisions)
    rows = [
        {
            "event": d.event_id,
            "class": d.event_class,
            "rule": d.rule,
            "action": d.action,
            "incident": d.incident_number or "",
            "runbook": d.runbook or "",
            "known error": d.known_error or "",
        }
        for d in decisions[:ARTIFACT_ROWS]
    ]
    create_table_artifact(
        key="event-triage",
        table=rows,
        description=f"{len(decisions)} events: "
        + ", ".join(f"{n} {a}" for a, n in sorted(actions.items())),
    )
    logger.info("triaged %d events: %s", len(decisions), dict(actions))
    return [asdict(d) for d in decisions]
