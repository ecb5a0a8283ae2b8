"""What the desk accepts as monitoring events, and how each becomes an `EventIn` to store.

Incoming payloads ignore fields they do not know (Alertmanager adds some over versions) but
bound every size, so a hostile body is refused with the field named, never half-stored.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from itsm.records import EventIn

MAX_LABELS = 64
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")]
LabelValue = Annotated[str, StringConstraints(max_length=2048)]
LabelSet = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Text = Annotated[str, StringConstraints(max_length=4096)]

NO_END = datetime(1, 1, 1, tzinfo=UTC)
"""Alertmanager's `endsAt` for an alert that has not ended (0001-01-01T00:00:00Z)."""


class Incoming(BaseModel):
    """Base for payloads from outside: unknown fields ignored, sizes bounded."""

    model_config = ConfigDict(extra="ignore")


class Alert(Incoming):
    """One alert of an Alertmanager webhook."""

    status: Literal["firing", "resolved"]
    labels: LabelSet
    annotations: Annotated[dict[LabelName, Text], Field(max_length=MAX_LABELS)] = Field(
        default_factory=dict
    )
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{1,64}$")] | None = None


class AlertmanagerWebhook(Incoming):
    """Alertmanager's webhook body, format version 4."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Text = ""
    groupKey: Text = ""
    alerts: Annotated[list[Alert], Field(min_length=1, max_length=10_000)]


class GenericEvent(Incoming):
    """An event from any other source: a script, a health check, another monitor."""

    source: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    status: Literal["firing", "resolved"] = "firing"
    fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    host: Annotated[str, StringConstraints(max_length=253)] | None = None
    service: Annotated[str, StringConstraints(max_length=128)] | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    summary: Text = ""
    labels: LabelSet = Field(default_factory=dict)
    occurred_at: AwareDatetime | None = None


def _fingerprint(labels: dict[str, str]) -> str:
    canonical = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def from_alertmanager(webhook: AlertmanagerWebhook) -> list[EventIn]:
    """One event per alert; the alert's labels name its host and service."""
    events = []
    for alert in webhook.alerts:
        ends_at = alert.endsAt if alert.endsAt and alert.endsAt > NO_END else None
        events.append(
            EventIn(
                source="alertmanager",
                fingerprint=alert.fingerprint or _fingerprint(alert.labels),
                status=alert.status,
                host=alert.labels.get("host"),
                service=alert.labels.get("service"),
                labels=alert.labels,
                annotations=alert.annotations,
                summary=alert.annotations.get("summary", alert.labels.get("alertname", ""))[:1000],
                occurred_at=alert.startsAt,
                ends_at=ends_at if alert.status == "resolved" else None,
            )
        )
    return events


def from_generic(event: GenericEvent, now: datetime) -> EventIn:
    """An `EventIn` from a generic event; `severity` becomes a label for classification."""
    labels = dict(event.labels)
    if event.severity:
        labels.setdefault("severity", event.severity)
    for key in ("host", "service"):
        value = getattr(event, key)
        if value:
            labels.setdefault(key, value)
    return EventIn(
        source=event.source,
        fingerprint=event.fingerprint or _fingerprint({"source": event.source, **labels}),
        status=event.status,
        host=event.host,
        service=event.service,
        labels=labels,
        annotations={},
        summary=event.summary[:1000],
        occurred_at=event.occurred_at or now,
        ends_at=now if event.status == "resolved" else None,
    )
