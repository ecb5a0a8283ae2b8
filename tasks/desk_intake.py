"""Send routine jobs' findings into the desk's event intake, so triage decides by the same rules.

Jobs never open incidents themselves: they post generic events to `POST /api/v1/events`
exactly as any monitor does, authenticated with a token kept in a Prefect `Secret` block,
and triage classifies, correlates, suppresses in maintenance windows and opens incidents.
Which incidents still wait for an all-clear is read from the records store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, cast

import requests
from prefect import task
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from opsflow.errors import PermanentError, TransientError
from opsflow.itsm.records import OPEN_STATES
from opsflow.itsm.store.records import open_records
from opsflow.settings import get_settings
from opsflow.tasks.retry import RETRY_TRANSIENT_LONGER

DESK_TOKEN_BLOCK = "opsflow-desk-token"  # noqa: S105 (a block name, not a secret)
"""Default name of the Secret block holding the token jobs post events with (role monitor)."""

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
BATCH = 1000


class DeskEvent(BaseModel):
    """One generic event as the desk's intake takes it; `occurred_at` makes a resend a repeat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    status: Literal["firing", "resolved"] = "firing"
    fingerprint: str = Field(min_length=1, max_length=128)
    host: str | None = None
    service: str | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    summary: str = Field(default="", max_length=4096)
    labels: dict[str, str] = Field(default_factory=dict)
    occurred_at: AwareDatetime


class Delivery(BaseModel):
    """What the desk answered: events stored and repeats it already had."""

    sent: int
    stored: int
    duplicates: int


class OpenIncident(BaseModel):
    """The part of an open incident a job needs to tell whether its finding cleared."""

    model_config = ConfigDict(extra="ignore")

    number: str
    host: str | None = None
    service: str | None = None
    symptom: str
    state: str


class DeskRefusedError(PermanentError):
    """The desk answered 4xx: the token or the payload is wrong, and resending will not help."""


class DeskUnavailableError(TransientError):
    """The desk did not answer, or answered 5xx: trying again later may succeed."""


def _desk(desk_url: str | None, token_block: str) -> tuple[str, dict[str, str]]:
    try:
        # Prefect types load() as the block or its coroutine; from sync code it is the block.
        token = cast(Secret, Secret.load(token_block)).get()
    except ValueError as exc:
        raise PermanentError(
            f"no Secret block {token_block!r} with the desk token for routine jobs: {exc}"
        ) from None
    url = (desk_url or get_settings().desk_url).rstrip("/")
    return url, {"Authorization": f"Bearer {token}"}


def _call(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
    try:
        response = requests.request(
            method, url, headers=headers, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kwargs
        )
    except requests.RequestException as exc:
        raise DeskUnavailableError(f"{method} {url}: desk did not answer: {exc}") from None
    if response.status_code >= 500:
        raise DeskUnavailableError(f"{method} {url}: {response.status_code}: {response.text[:300]}")
    if response.status_code >= 400:
        raise DeskRefusedError(f"{method} {url}: {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else None


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT_LONGER,
    timeout_seconds=180,
)
def send_events(
    events: list[DeskEvent],
    desk_url: str | None = None,
    token_block: str = DESK_TOKEN_BLOCK,
) -> Delivery:
    """Post events to the desk's intake in batches; retried, as the desk stores a repeat once.

    Raises:
        PermanentError: the desk refused some events (the others are stored): a finding that
            opens no incident must fail its job where operators see it, not vanish.
    """
    if not events:
        return Delivery(sent=0, stored=0, duplicates=0)
    url, headers = _desk(desk_url, token_block)
    stored = duplicates = 0
    rejected: list[str] = []
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        body = [e.model_dump(mode="json") for e in batch]
        answer = _call("POST", f"{url}/api/v1/events", headers, json=body)
        stored += int(answer.get("stored", 0))
        duplicates += int(answer.get("duplicates", 0))
        for refused in answer.get("rejected", []):
            event = batch[int(refused["index"])]
            rejected.append(f"{event.fingerprint}: {refused['reason']}")
    logger = get_run_logger()
    logger.info("sent %d events to %s: %d new", len(events), url, stored)
    if rejected:
        for reason in rejected:
            logger.error("the desk refused event %s", reason)
        raise PermanentError(f"the desk refused {len(rejected)} of {len(events)} event(s)")
    return Delivery(sent=len(events), stored=stored, duplicates=duplicates)


@task(cache_policy=NONE, timeout_seconds=120)
def read_open_incidents(symptoms: list[str]) -> list[OpenIncident]:
    """The open incidents with one of `symptoms`, read from the records store (reads only)."""
    store = open_records()
    found: list[OpenIncident] = []
    offset, limit = 0, 1000
    while True:
        page = store.incidents.list(state=OPEN_STATES, limit=limit, offset=offset)
        found += [
            OpenIncident.model_validate(i.model_dump()) for i in page if i.symptom in symptoms
        ]
        if len(page) < limit:
            return found
        offset += limit


def clearing_events(
    open_incidents: Iterable[OpenIncident],
    cleared: Iterable[DeskEvent],
    still_firing: Iterable[DeskEvent] = (),
) -> list[DeskEvent]:
    """The `resolved` twins of `cleared` findings whose incident is open and nothing refires.

    A job sends `resolved` only where an incident waits for it, so a healthy estate sends
    nothing rather than one event per check per run; and never for a host, service and
    symptom that another finding of the same run still fires.
    """

    def key(event: DeskEvent) -> tuple[str | None, str | None, str | None]:
        return (event.host, event.service, event.labels.get("symptom"))

    waiting = {(i.host, i.service, i.symptom) for i in open_incidents}
    firing = {key(e) for e in still_firing}
    resolved: dict[str, DeskEvent] = {}
    for event in cleared:
        if key(event) in waiting and key(event) not in firing:
            resolved.setdefault(event.fingerprint, event.model_copy(update={"status": "resolved"}))
    return list(resolved.values())
