"""What the desk accepts as monitoring events, and how each becomes an `EventIn` to store.

Incoming payloads ignore fields they do not know (Alertmanager adds some over versions) but
bound every size. A body is read item by item: the alerts (or generic events) that are valid
are stored and the others are reported back with the field at fault, so one bad alert never
costs the good ones grouped with it; a body with nothing usable in it is refused whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from opsflow.itsm.records import EventIn

MAX_LABELS = 64
MAX_ITEMS = 10_000
"""Alerts in one webhook, or generic events in one list: 10,000 fit in the 8 MiB body limit."""


def _no_nul(value: str) -> str:
    """Refuse NUL: PostgreSQL stores no text with it, and one such alert would fail the
    commit of every alert grouped with it."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


Clean = AfterValidator(_no_nul)
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")]
LabelValue = Annotated[str, StringConstraints(max_length=2048), Clean]
LabelSet = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Text = Annotated[str, StringConstraints(max_length=4096), Clean]


def _in_utc(value: datetime) -> datetime:
    """The time in UTC; refused when its offset takes it outside the years 1 to 9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside the years 1 to 9999 once converted to UTC") from None


Timestamp = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A time with its offset, converted to UTC here so no later step can overflow on it."""

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
    startsAt: Timestamp
    endsAt: Timestamp | None = None
    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{1,64}$")] | None = None


class WebhookEnvelope(Incoming):
    """Alertmanager's webhook body around its alerts, which are looked at one by one."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Text = ""
    groupKey: Text = ""
    alerts: Annotated[list[Any], Field(min_length=1, max_length=MAX_ITEMS)]


class AlertmanagerWebhook(WebhookEnvelope):
    """Alertmanager's webhook body, format version 4."""

    alerts: Annotated[list[Alert], Field(min_length=1, max_length=MAX_ITEMS)]


class GenericEvent(Incoming):
    """An event from any other source: a script, a health check, another monitor."""

    source: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    status: Literal["firing", "resolved"] = "firing"
    fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=128), Clean] | None = (
        None
    )
    host: Annotated[str, StringConstraints(max_length=253), Clean] | None = None
    service: Annotated[str, StringConstraints(max_length=128), Clean] | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    summary: Text = ""
    labels: LabelSet = Field(default_factory=dict)
    occurred_at: Timestamp | None = None


def _fingerprint(labels: dict[str, str]) -> str:
    canonical = json.dumps(labels, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def from_alert(alert: Alert) -> EventIn:
    """The event of one alert, its labels whole: which of them name its host and service is
    the estate's label contract, applied by triage (`itsm.ci`)."""
    ends_at = alert.endsAt if alert.endsAt and alert.endsAt > NO_END else None
    return EventIn(
        source="alertmanager",
        fingerprint=alert.fingerprint or _fingerprint(alert.labels),
        status=alert.status,
        labels=alert.labels,
        annotations=alert.annotations,
        summary=alert.annotations.get("summary", alert.labels.get("alertname", ""))[:1000],
        occurred_at=alert.startsAt,
        ends_at=ends_at if alert.status == "resolved" else None,
    )


def from_alertmanager(webhook: AlertmanagerWebhook) -> list[EventIn]:
    """One event per alert of a webhook already validated whole."""
    return [from_alert(alert) for alert in webhook.alerts]


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


FieldError = dict[str, Any]
"""One problem as FastAPI reports validation errors: `loc` (a path), `msg` and `type`."""


class Rejected(BaseModel):
    """An alert or event of a delivery that was not stored, and why."""

    index: int = Field(description="Its position in the body's alerts (or list), from 0.")
    reason: str = Field(description="The field at fault and what is wrong with it.")


class BodyRefusedError(ValueError):
    """Nothing in a body can be stored; `errors` say why, as FastAPI reports them."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(_reason(e) for e in errors))


@dataclass
class Delivery:
    """What one body held: the events to store, and the items refused with their problems."""

    events: list[EventIn] = field(default_factory=list)
    refused: dict[int, list[FieldError]] = field(default_factory=dict)

    def rejected(self) -> list[Rejected]:
        """One entry per refused item, its problems joined into one reason."""
        return [
            Rejected(index=index, reason="; ".join(_reason(e) for e in errors))
            for index, errors in sorted(self.refused.items())
        ]


Item = TypeVar("Item", bound=BaseModel)
GENERIC_BODY = TypeAdapter(
    GenericEvent | Annotated[list[GenericEvent], Field(max_length=MAX_ITEMS)]
)
"""A generic delivery: one event or a list of them."""


def read_alertmanager(body: bytes) -> Delivery:
    """The events of a webhook body, alert by alert; `BodyRefusedError` if none is usable."""
    try:
        webhook = AlertmanagerWebhook.model_validate_json(body)
    except ValidationError:
        try:
            envelope = WebhookEnvelope.model_validate(_parse(body))
        except ValidationError as exc:
            raise BodyRefusedError(_errors(exc, ())) from None
        return _one_by_one(envelope.alerts, Alert, from_alert, lambda i: ("alerts", i))
    return _convert(list(enumerate(webhook.alerts)), from_alert, lambda i: ("alerts", i))


def read_generic(body: bytes, now: datetime) -> Delivery:
    """The events of a generic body (one event or a list), event by event."""

    def convert(event: GenericEvent) -> EventIn:
        return from_generic(event, now)

    try:
        parsed = GENERIC_BODY.validate_json(body)
    except ValidationError:
        data = _parse(body)
        if not isinstance(data, list):
            return _one_by_one([data], GenericEvent, convert, lambda i: ())
        if len(data) > MAX_ITEMS:
            problem = f"at most {MAX_ITEMS} events in one list"
            raise BodyRefusedError([{"loc": [], "msg": problem, "type": "too_long"}]) from None
        return _one_by_one(data, GenericEvent, convert, lambda i: (i,))
    if isinstance(parsed, list):
        return _convert(list(enumerate(parsed)), convert, lambda i: (i,))
    return _convert([(0, parsed)], convert, lambda i: ())


Locate = Callable[[int], tuple[str | int, ...]]
"""Where the item at an index sits in the body, for error locations."""


def _parse(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except RecursionError:
        problem = "not valid JSON: nested too deeply"
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes not UTF-8
        problem = f"not valid JSON: {getattr(exc, 'msg', None) or 'not UTF-8'}"
    else:
        return data
    raise BodyRefusedError([{"loc": [], "msg": problem, "type": "json_invalid"}])


def _one_by_one(
    raw: Sequence[Any], model: type[Item], convert: Callable[[Item], EventIn], locate: Locate
) -> Delivery:
    """Validate and convert each item alone, so a bad one refuses only itself."""
    refused: dict[int, list[FieldError]] = {}
    valid = []
    for index, item in enumerate(raw):
        try:
            valid.append((index, model.model_validate(item)))
        except ValidationError as exc:
            refused[index] = _errors(exc, locate(index))
    return _convert(valid, convert, locate, refused)


def _convert(
    items: list[tuple[int, Item]],
    convert: Callable[[Item], EventIn],
    locate: Locate,
    refused: dict[int, list[FieldError]] | None = None,
) -> Delivery:
    """The events of valid items; refuses the body when no item at all is left."""
    delivery = Delivery(refused=refused or {})
    for index, item in items:
        try:
            delivery.events.append(convert(item))
        except ValidationError as exc:
            delivery.refused[index] = _errors(exc, locate(index))
    if not delivery.events and delivery.refused:
        raise BodyRefusedError(
            [e for _, errors in sorted(delivery.refused.items()) for e in errors]
        )
    return delivery


def _errors(exc: ValidationError, where: tuple[str | int, ...]) -> list[FieldError]:
    return field_errors(
        exc.errors(include_url=False, include_input=False, include_context=False), where
    )


def field_errors(
    errors: Iterable[Mapping[str, Any]], where: tuple[str | int, ...] = ()
) -> list[FieldError]:
    """Validation errors as JSON can carry them back: location, message and type only.

    The input is left out (it may be megabytes, or a lone surrogate no JSON encoder takes),
    and strings from the body (label names in a location) are shortened and escaped.
    """
    return [
        {
            "loc": [*where, *(p if isinstance(p, int) else _printable(str(p)) for p in e["loc"])],
            "msg": _printable(str(e["msg"]), 500),
            "type": str(e["type"]),
        }
        for e in errors
    ]


def _printable(text: str, limit: int = 64) -> str:
    cut = text if len(text) <= limit else text[:limit] + "..."
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _reason(error: FieldError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return f"{path.lstrip('.') or 'body'}: {error['msg']}"
