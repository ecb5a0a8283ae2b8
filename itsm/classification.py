"""Event classification: what an event or a person's report means, by the estate's rules.

The first matching rule of the estate classifies; with none, the `severity` label does. One
classification for alerts and for people, so both get the same correlation key, impact,
urgency and runbook for the same CI and symptom. Also here: the CI an alert's labels name,
and the maintenance window that covers an event. Pure: no store, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from opsflow.inventory.models import Estate, Service
from opsflow.itsm.ci import ci_of
from opsflow.itsm.records import Event, EventClass

SEVERITY_CLASSES: dict[str, EventClass] = {
    "critical": "exception",
    "error": "exception",
    "page": "exception",
    "warning": "warning",
    "info": "informational",
    "none": "informational",
}
"""Fallback classification by the `severity` label when no rule matches."""


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


def _render_key(template: str, values: dict[str, str]) -> str:
    try:
        return template.format_map(values)
    except (KeyError, ValueError, IndexError):
        return "{host}/{service}/{symptom}".format_map(values)


def classify(event: Event, estate: Estate) -> Classification:
    """Classify by the first matching rule of the estate, else by the `severity` label."""
    return classify_labels(event.labels, event.host, event.service, estate)


def classify_labels(
    labels: dict[str, str], host: str | None, service: str | None, estate: Estate
) -> Classification:
    """Classify what an event or a person's report says about a CI (host and/or service).

    One classification for alerts and for people, so both get the same correlation key,
    impact, urgency and runbook for the same CI and symptom.
    """
    rule = next((r for r in estate.rules if r.matches(labels)), None)
    symptom = (rule.symptom if rule and rule.symptom else None) or labels.get(
        "symptom", labels.get("alertname", "unspecified")
    )
    symptom = symptom[:128]
    known_service = service_named(service, estate)
    impact = (rule.impact if rule else None) or (known_service.impact if known_service else 2)
    urgency = rule.urgency if rule else (1 if labels.get("severity") == "critical" else 2)
    runbook = (rule.runbook if rule else None) or (
        known_service.runbooks.get(symptom) if known_service else None
    )
    # A runbook neither shipped nor declared in the estate: an incident, but no automation.
    if runbook not in estate.runbook_names or (host and not known_host(host, estate)):
        runbook = None
    if rule is not None:
        event_class, rule_name = rule.event_class, rule.name
    else:
        severity = labels.get("severity", "none").lower()
        event_class = SEVERITY_CLASSES.get(severity, "warning")
        rule_name = f"severity:{severity}"[:255]
    values = {
        **labels,
        "host": host or "-",
        "service": service or "-",
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


def known_host(name: str, estate: Estate) -> bool:
    """Whether the estate has a host called `name`."""
    return any(h.name == name for h in estate.hosts)


def service_named(name: str | None, estate: Estate) -> Service | None:
    """The estate's service called `name`, if there is one."""
    if not name:
        return None
    return next((s for s in estate.services if s.name == name), None)


def with_ci(event: Event, estate: Estate) -> Event:
    """The event with the host and service its labels name (`itsm.ci`) where it names neither
    itself: an alert has only labels; a generic event may name its CI in fields of its own."""
    if event.host and event.service:
        return event
    host, service = ci_of(event.labels, estate)
    host, service = event.host or host, event.service or service
    if (host, service) == (event.host, event.service):
        return event
    return event.model_copy(update={"host": host, "service": service})


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
