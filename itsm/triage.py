"""Event triage: classify each event, then record it, correlate it, or open an incident.

Pure decisions over the estate's rules plus the store's writes, so the triage flow can run a
micro-batch of thousands of events in one call, in milliseconds per event. The known-error
database is read once per batch and consulted before the estate's runbooks: a new incident
that shows a known error is linked to it and gets its workaround as its runbook.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from inventory.models import Estate, EventRule
from itsm.maintenance_store import declared_windows
from itsm.problem_store import ProblemStore
from itsm.problems import KnownError, match_known_error
from itsm.records import Event, EventClass, Incident, IncidentCreate, IncidentUpdate
from itsm.store import EventLink, Store

SEVERITY_CLASSES: dict[str, EventClass] = {
    "critical": "exception",
    "error": "exception",
    "page": "exception",
    "warning": "warning",
    "info": "informational",
    "none": "informational",
}
"""Fallback classification by the `severity` label when no rule matches."""

RUNBOOKS = frozenset({"restart-service", "free-disk-space", "recover-hung-service"})
"""Runbooks opsflow can run; an event naming any other gets an incident but no automation."""

Action = Literal[
    "recorded", "suppressed", "opened", "correlated", "alert-resolved", "no-open-incident"
]


@dataclass(frozen=True)
class Classification:
    """What an event means: its class, the rule that said so, and the incident it belongs to."""

    event_class: EventClass
    rule: str
    symptom: str
    impact: int
    urgency: int
    runbook: str | None
    correlation_key: str


@dataclass(frozen=True)
class Decision:
    """What triage did with one event, for the flow's table artifact and its follow-ups."""

    event_id: int
    event_class: EventClass
    rule: str
    action: Action
    incident_id: int | None = None
    incident_number: str | None = None
    runbook: str | None = None
    known_error: str | None = None


def _matches(rule: EventRule, labels: dict[str, str]) -> bool:
    return all(labels.get(name) == value for name, value in rule.match.items())


def _render_key(template: str, values: dict[str, str]) -> str:
    try:
        return template.format_map(values)
    except (KeyError, ValueError, IndexError):
        return "{host}/{service}/{symptom}".format_map(values)


def classify(event: Event, estate: Estate) -> Classification:
    """Classify by the first matching rule of the estate, else by the `severity` label."""
    labels = event.labels
    rule = next((r for r in estate.rules if _matches(r, labels)), None)
    symptom = (rule.symptom if rule and rule.symptom else None) or labels.get(
        "symptom", labels.get("alertname", "unspecified")
    )
    service = _known_service(event, estate)
    impact = (rule.impact if rule else None) or (service.impact if service else 2)
    urgency = rule.urgency if rule else (1 if labels.get("severity") == "critical" else 2)
    runbook = (rule.runbook if rule else None) or (
        service.runbooks.get(symptom) if service else None
    )
    if runbook not in RUNBOOKS or (event.host and not _known_host(event.host, estate)):
        runbook = None
    if rule is not None:
        event_class, rule_name = rule.event_class, rule.name
    else:
        severity = labels.get("severity", "none").lower()
        event_class = SEVERITY_CLASSES.get(severity, "warning")
        rule_name = f"severity:{severity}"
    values = {
        **labels,
        "host": event.host or "-",
        "service": event.service or "-",
        "symptom": symptom,
    }
    template = rule.correlation_key if rule else "{host}/{service}/{symptom}"
    return Classification(
        event_class=event_class,
        rule=rule_name,
        symptom=symptom,
        impact=impact,
        urgency=urgency,
        runbook=runbook,
        correlation_key=_render_key(template, values)[:512],
    )


def _known_host(name: str, estate: Estate) -> bool:
    return any(h.name == name for h in estate.hosts)


def _known_service(event: Event, estate: Estate):
    if not event.service:
        return None
    return next((s for s in estate.services if s.name == event.service), None)


def in_maintenance(event: Event, estate: Estate, at: datetime) -> str | None:
    """The name of a maintenance window covering the event's host at `at`, if any."""
    if not event.host:
        return None
    groups = estate.groups
    for window in estate.maintenance:
        hosts = set(window.hosts) | set(groups.get(window.group or "", []))
        if event.host in hosts and window.start <= at < window.end:
            return window.name
    return None


def triage(
    store: Store,
    estate: Estate,
    events: list[Event],
    now: datetime,
    flow_run_id: str | None = None,
) -> list[Decision]:
    """Decide every event of a batch, write the outcomes, and return the decisions in order.

    Firing exceptions with the same correlation key go to one open incident; a resolved
    alert closes the loop on the incident it raised; an incident opened for a known error
    is linked to it and runs its workaround.
    """
    problem_store = ProblemStore(store)
    known_errors = problem_store.active_known_errors()
    decisions: list[Decision] = []
    by_key: dict[str, list[tuple[Event, Classification]]] = defaultdict(list)
    declared = declared_windows(store, [e.occurred_at for e in events])

    def settle(key: str, group: list[tuple[Event, Classification]]) -> None:
        """Open or correlate the incident of one key's firing events, in order."""
        first, verdict = group[0]
        known_error = _known_error_for(first, verdict, known_errors)
        runbook = verdict.runbook
        if known_error is not None and _automatable(known_error.workaround, first, estate):
            runbook = known_error.workaround
        first_incident, created = _open_or_correlate(
            store, estate, first, verdict, key, runbook, now, flow_run_id
        )
        linked = None
        if created and known_error is not None:
            _apply_known_error(
                problem_store, first_incident.id, known_error, runbook, now, flow_run_id
            )
            linked = known_error.number
        decisions.append(
            Decision(
                first.id,
                verdict.event_class,
                verdict.rule,
                "opened" if created else "correlated",
                first_incident.id,
                first_incident.number,
                runbook if created else None,
                linked,
            )
        )
        rest = [event for event, _ in group[1:]]
        if rest and store.correlate_more(
            first_incident.id,
            len(rest),
            max(e.occurred_at for e in rest),
            actor="triage",
            now=now,
            flow_run_id=flow_run_id,
            link=EventLink([e.id for e in rest], verdict.event_class, verdict.rule, now),
        ):
            decisions.extend(
                [
                    Decision(
                        e.id,
                        verdict.event_class,
                        verdict.rule,
                        "correlated",
                        first_incident.id,
                        first_incident.number,
                    )
                    for e in rest
                ]
            )
            return
        for event in rest:
            incident, created = _open_or_correlate(
                store, estate, event, verdict, key, runbook, now, flow_run_id
            )
            decisions.append(
                Decision(
                    event.id,
                    verdict.event_class,
                    verdict.rule,
                    "opened" if created else "correlated",
                    incident.id,
                    incident.number,
                    runbook if created else None,
                )
            )

    for event in events:
        verdict = classify(event, estate)
        window = in_maintenance(event, estate, event.occurred_at) or declared.covering(
            event.host, event.occurred_at
        )
        if event.status == "resolved" and verdict.event_class != "informational":
            # Firings of this key that came before the resolution go to their incident
            # first: a batch holding both must open it and then close the loop, not leave
            # an incident open for an alert that has already resolved.
            if verdict.correlation_key in by_key:
                settle(verdict.correlation_key, by_key.pop(verdict.correlation_key))
            decisions.append(_close_loop(store, event, verdict, now, flow_run_id))
        elif verdict.event_class != "exception":
            decisions.append(Decision(event.id, verdict.event_class, verdict.rule, "recorded"))
        elif window:
            decisions.append(
                Decision(event.id, verdict.event_class, f"{verdict.rule} [{window}]", "suppressed")
            )
        else:
            by_key[verdict.correlation_key].append((event, verdict))
    for key, group in by_key.items():
        settle(key, group)
    store.mark_triaged([(d.event_id, d.event_class, d.rule, d.incident_id) for d in decisions], now)
    return decisions


def _open_or_correlate(
    store: Store,
    estate: Estate,
    event: Event,
    verdict: Classification,
    key: str,
    runbook: str | None,
    now: datetime,
    flow_run_id: str | None,
) -> tuple[Incident, bool]:
    """Open the incident an exception event calls for, or count it on the open one.

    The event is marked triaged to that incident in the same write.
    """
    return store.open_or_correlate(
        IncidentCreate(
            host=event.host,
            service=event.service,
            symptom=verdict.symptom,
            summary=event.summary or verdict.symptom,
            impact=verdict.impact,
            urgency=verdict.urgency,
            correlation_key=key,
            runbook=runbook,
            assignment_group=_team_for(event, estate),
        ),
        event.occurred_at,
        actor="triage",
        flow_run_id=flow_run_id,
        link=EventLink([event.id], verdict.event_class, verdict.rule, now),
    )


def _known_error_for(
    event: Event, verdict: Classification, known_errors: list[KnownError]
) -> KnownError | None:
    """The known error an exception event shows, matched on service, symptom, host, labels."""
    if not known_errors:
        return None
    return match_known_error(known_errors, event.service, verdict.symptom, event.host, event.labels)


def _automatable(runbook: str, event: Event, estate: Estate) -> bool:
    """Whether triage may hand `runbook` to restoration: a known runbook on a known host."""
    return runbook in RUNBOOKS and not (event.host and not _known_host(event.host, estate))


def _apply_known_error(
    problem_store: ProblemStore,
    incident_id: int,
    known_error: KnownError,
    runbook: str | None,
    now: datetime,
    flow_run_id: str | None,
) -> None:
    """Link a new incident to its known error and say in the worklog what that means."""
    problem_store.link_incident_to_known_error(
        incident_id, known_error.id, actor="triage", now=now, flow_run_id=flow_run_id
    )
    action = (
        f"workaround {runbook} applied"
        if runbook == known_error.workaround
        else f"workaround {known_error.workaround} cannot run automatically here"
    )
    problem_store.store.add_worklog(
        incident_id,
        "triage",
        f"known error {known_error.number}: {known_error.root_cause[:500]}; {action}",
        now,
    )


def _team_for(event: Event, estate: Estate) -> str:
    service = _known_service(event, estate)
    return (service.owner_team if service else None) or estate.settings.default_team


def _close_loop(
    store: Store, event: Event, verdict: Classification, now: datetime, flow_run_id: str | None
) -> Decision:
    incident = store.open_incident_for_key(verdict.correlation_key)
    if incident is None:
        return Decision(event.id, verdict.event_class, verdict.rule, "no-open-incident")
    note = f"Alert resolved at {event.ends_at or event.occurred_at:%Y-%m-%d %H:%M:%S %Z}."
    if incident.state == "New":
        incident = store.update_incident(
            incident.id,
            IncidentUpdate(
                state="Resolved",
                resolution_code="no-fault",
                resolution_notes=f"{note} The fault cleared before any remediation.",
            ),
            actor="triage",
            now=now,
            flow_run_id=flow_run_id,
        )
    else:
        store.add_worklog(incident.id, "triage", note, now)
    return Decision(
        event.id, verdict.event_class, verdict.rule, "alert-resolved", incident.id, incident.number
    )
