"""Event triage: classify each event (`itsm.classification`), then record it, correlate it,
or open an incident.

Pure decisions over the estate's rules plus the store's writes, so the triage flow can run a
micro-batch of thousands of events in one call, in milliseconds per event. The known-error
database is read once per batch and consulted before the estate's runbooks: a new incident
that shows a known error is linked to it and gets its workaround as its runbook.

Failures are isolated per event: an event triage cannot handle is marked failed with its
reason and every other event of the batch goes on. Only an error of the database itself
(unreachable, locked, contended) fails the batch, which is then retried whole.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import InterfaceError, OperationalError

from opsflow.errors import TransientError
from opsflow.inventory.models import Estate
from opsflow.itsm.classification import (
    Classification,
    classify,
    classify_labels,
    in_maintenance,
    known_host,
    service_named,
    with_ci,
)
from opsflow.itsm.problems import KnownError, match_known_error
from opsflow.itsm.records import Event, EventClass, IncidentCreate, IncidentReport, IncidentUpdate
from opsflow.itsm.store.correlation import Correlation
from opsflow.itsm.store.events import EventLink
from opsflow.itsm.store.records import Records

Action = Literal[
    "recorded",
    "suppressed",
    "opened",
    "correlated",
    "adopted",
    "alert-resolved",
    "no-open-incident",
    "failed",
]
"""What triage did with an event; "adopted" is a correlation that gave an open incident
without automation (a person's report) the runbook this event calls for."""

RESTORING_ACTIONS = frozenset({"opened", "adopted"})
"""Decisions after which the incident's runbook is started, when the decision names one."""

BATCH_ERRORS = (TransientError, OperationalError, InterfaceError)
"""Errors of the database or of contention, not of one event: the batch is retried whole."""


@dataclass(frozen=True)
class Decision:
    """What triage did with one event, for the flow's table artifact and its follow-ups."""

    event_id: int
    event_class: EventClass | None
    rule: str
    action: Action
    incident_id: int | None = None
    incident_number: str | None = None
    runbook: str | None = None
    known_error: str | None = None
    reason: str | None = None


def triage(
    store: Records,
    estate: Estate,
    events: list[Event],
    now: datetime,
    flow_run_id: str | None = None,
) -> list[Decision]:
    """Decide every event of a batch, write the outcomes, and return the decisions in order.

    Firing exceptions with the same correlation key go to one open incident; a resolved
    alert closes the loop on the incident it raised; an incident opened for a known error
    is linked to it and runs its workaround. An event that cannot be handled gets a
    "failed" decision with its reason and is recorded as failed; the others go on.

    Raises:
        TransientError, OperationalError, InterfaceError: the database failed; nothing of
            the events not yet written is lost, they stay pending for the next batch.
    """
    known_errors = store.known_errors.active()
    decisions: list[Decision] = []
    by_key: dict[str, list[tuple[Event, Classification]]] = defaultdict(list)
    declared = store.maintenance.index([e.occurred_at for e in events])

    def failed(event: Event, verdict: Classification | None, exc: Exception) -> None:
        if isinstance(exc, BATCH_ERRORS):
            raise exc
        decisions.append(
            Decision(
                event.id,
                verdict.event_class if verdict else None,
                verdict.rule if verdict else "",
                "failed",
                reason=_reason(exc),
            )
        )

    def open_first(
        group: list[tuple[Event, Classification]], key: str
    ) -> tuple[Decision, list[tuple[Event, Classification]]] | None:
        """Open or correlate the incident for the first event of the group that allows it."""
        for index, (event, verdict) in enumerate(group):
            try:
                decision = _settle_one(
                    store,
                    estate,
                    known_errors,
                    event,
                    verdict,
                    key,
                    now,
                    flow_run_id,
                )
            except Exception as exc:  # any error of this one event is its failure
                failed(event, verdict, exc)
                continue
            decisions.append(decision)
            return decision, group[index + 1 :]
        return None

    def settle(key: str, group: list[tuple[Event, Classification]]) -> None:
        """Open or correlate the incident of one key's firing events, in order."""
        opened = open_first(group, key)
        if opened is None:
            return
        first, rest = opened
        verdict = group[0][1]
        if rest and first.incident_id is not None:
            try:
                counted = store.correlation.correlate_more(
                    first.incident_id,
                    len(rest),
                    max(e.occurred_at for e, _ in rest),
                    actor="triage",
                    now=now,
                    flow_run_id=flow_run_id,
                    link=EventLink([e.id for e, _ in rest], verdict.event_class, verdict.rule, now),
                )
            except Exception as exc:  # the events are then settled one by one
                if isinstance(exc, BATCH_ERRORS):
                    raise
                counted = None
            if counted is not None:
                decisions.extend(
                    Decision(e.id, v.event_class, v.rule, "correlated", counted.id, counted.number)
                    for e, v in rest
                )
                return
        while rest:
            opened = open_first(rest, key)
            rest = opened[1] if opened else []

    for event in events:
        verdict = None
        try:
            event = with_ci(event, estate)
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
                rule = f"{verdict.rule} [{window}]"[:255]
                decisions.append(Decision(event.id, verdict.event_class, rule, "suppressed"))
            elif not (event.host or event.service):
                decisions.append(
                    Decision(
                        event.id,
                        verdict.event_class,
                        verdict.rule,
                        "failed",
                        reason="no CI: an incident needs a host or a service, and no label "
                        "of the estate's label contract names an inventory host or a service",
                    )
                )
            else:
                by_key[verdict.correlation_key].append((event, verdict))
        except Exception as exc:  # any error of this one event is its failure
            failed(event, verdict, exc)
    for key, group in by_key.items():
        settle(key, group)
    store.events.mark_triaged(
        [
            (d.event_id, d.event_class, d.rule, d.incident_id)
            for d in decisions
            if d.action != "failed" and d.event_class is not None
        ],
        now,
        flow_run_id=flow_run_id,
    )
    store.events.mark_failed(
        [(d.event_id, d.reason or "failed") for d in decisions if d.action == "failed"],
        now,
        flow_run_id=flow_run_id,
    )
    return decisions


def _reason(exc: Exception) -> str:
    """A failure's reason in one line: the error's type and its first line."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:500]


def _settle_one(
    store: Records,
    estate: Estate,
    known_errors: list[KnownError],
    event: Event,
    verdict: Classification,
    key: str,
    now: datetime,
    flow_run_id: str | None,
) -> Decision:
    """Open the incident an exception event calls for, or count it on the open one.

    A new incident that shows a known error is linked to it and runs its workaround when it
    can; an open incident with no automation yet adopts this event's runbook.
    """
    known_error = _known_error_for(event, verdict, known_errors)
    runbook = verdict.runbook
    if known_error is not None and _automatable(known_error.workaround, event, estate):
        runbook = known_error.workaround
    found = store.correlation.correlate(
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
        adopt_runbook=True,
    )
    incident = found.incident
    linked = None
    if found.outcome == "opened" and known_error is not None:
        _apply_known_error(store, incident.id, known_error, runbook, now, flow_run_id)
        linked = known_error.number
    return Decision(
        event.id,
        verdict.event_class,
        verdict.rule,
        found.outcome,
        incident.id,
        incident.number,
        runbook if found.outcome in RESTORING_ACTIONS else None,
        linked,
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
    return runbook in estate.runbook_names and not (
        event.host and not known_host(event.host, estate)
    )


def _apply_known_error(
    store: Records,
    incident_id: int,
    known_error: KnownError,
    runbook: str | None,
    now: datetime,
    flow_run_id: str | None,
) -> None:
    """Link a new incident to its known error and say in the worklog what that means."""
    store.known_errors.link_incident(
        incident_id, known_error.id, actor="triage", now=now, flow_run_id=flow_run_id
    )
    action = (
        f"workaround {runbook} applied"
        if runbook == known_error.workaround
        else f"workaround {known_error.workaround} cannot run automatically here"
    )
    store.worklog.add(
        incident_id,
        "triage",
        f"known error {known_error.number}: {known_error.root_cause[:500]}; {action}",
        now,
    )


def _team_for(event: Event, estate: Estate) -> str:
    return _team_of(event.service, estate)


def _team_of(service_name: str | None, estate: Estate) -> str:
    service = service_named(service_name, estate)
    return (service.owner_team if service else None) or estate.settings.default_team


def report_incident(
    store: Records,
    estate: Estate,
    report: IncidentReport,
    reporter: str,
    assesses: bool,
    now: datetime,
) -> Correlation:
    """Open or join the incident a person reports, classified as an event about the CI would be.

    The correlation key and priority come from the estate's classification, so a report and
    the alert for the same CI and symptom meet on one incident; no runbook starts from a
    report (a later alert brings one, see `Correlator.correlate`'s adoption). The reporter's
    impact and urgency apply when they `assesses` (operators); anyone else's are noted in
    the worklog with their words. Every reporter is recorded on the incident.
    """
    labels = {"symptom": report.symptom}
    labels.update({k: v for k, v in (("host", report.host), ("service", report.service)) if v})
    verdict = classify_labels(labels, report.host, report.service, estate)
    impact, urgency = verdict.impact, verdict.urgency
    words = f"reported: {report.summary}"
    if assesses:
        impact, urgency = report.impact or impact, report.urgency or urgency
    elif report.impact or report.urgency:
        view = f"impact {report.impact or '-'}, urgency {report.urgency or '-'}"
        words += f" (reporter's view: {view})"
    return store.correlation.correlate(
        IncidentCreate(
            host=report.host,
            service=report.service,
            symptom=verdict.symptom,
            summary=report.summary,
            impact=impact,
            urgency=urgency,
            correlation_key=verdict.correlation_key,
            assignment_group=_team_of(report.service, estate),
        ),
        now,
        actor=reporter,
        report=words,
    )


def _close_loop(
    store: Records, event: Event, verdict: Classification, now: datetime, flow_run_id: str | None
) -> Decision:
    incident = store.incidents.open_for_key(verdict.correlation_key)
    if incident is None:
        return Decision(event.id, verdict.event_class, verdict.rule, "no-open-incident")
    note = f"Alert resolved at {event.ends_at or event.occurred_at:%Y-%m-%d %H:%M:%S %Z}."
    if incident.state == "New":
        incident = store.incidents.update(
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
        store.worklog.add(incident.id, "triage", note, now)
    return Decision(
        event.id, verdict.event_class, verdict.rule, "alert-resolved", incident.id, incident.number
    )
