"""Alertmanager silences: create one, or end one, through Alertmanager's API v2.

opsflow mirrors its maintenance windows as silences so that every receiver of a team's
Alertmanager (pager, chat, opsflow itself) is quiet during them, not only opsflow's triage.
Each task reads Alertmanager's state first and acts only when needed, so each is safe to
retry: a silence is recognised as ours by its `createdBy`, comment and matchers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import requests
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel

from opsflow.errors import PermanentError, TransientError
from opsflow.inventory.matchers import Matcher
from opsflow.inventory.models import AlertmanagerLink
from opsflow.tasks.change import Change
from opsflow.tasks.retry import RETRY_TRANSIENT

CREATED_BY = "opsflow"
"""The `createdBy` of every silence opsflow makes."""


class AlertmanagerUnavailableError(TransientError):
    """Alertmanager did not answer in time, or answered 5xx."""


class AlertmanagerRefusedError(PermanentError):
    """Alertmanager answered 4xx: the credentials or the silence are wrong."""


class SilenceChange(Change):
    """What a silence task did to Alertmanager (made or unchanged), and the silence's id."""

    silence_id: str


def _session(link: AlertmanagerLink) -> requests.Session:
    """A session with the credentials block the estate names, if it names one."""
    if link.credentials is None:
        return requests.Session()
    from opsflow.blocks.alertmanager import AlertmanagerCredentials

    try:
        # Prefect types load() as the block or its coroutine; from sync code it is the block.
        block = cast(AlertmanagerCredentials, AlertmanagerCredentials.load(link.credentials))
    except ValueError as exc:
        raise PermanentError(
            f"alertmanager.credentials: no Alertmanager credentials block "
            f"{link.credentials!r}: {exc}"
        ) from None
    return block.get_client()


def _call(
    session: requests.Session, link: AlertmanagerLink, method: str, path: str, **kwargs: Any
) -> Any:
    """One API call with its own connect and read timeouts; the JSON answer, None for 404."""
    url = f"{str(link.url).rstrip('/')}/api/v2/{path}"
    try:
        response = session.request(method, url, timeout=(link.timeout_s, link.timeout_s), **kwargs)
    except requests.RequestException as exc:
        raise AlertmanagerUnavailableError(f"{method} {url}: no answer: {exc}") from None
    if response.status_code == 404:
        return None
    if response.status_code >= 500:
        raise AlertmanagerUnavailableError(
            f"{method} {url}: {response.status_code}: {response.text[:300]}"
        )
    if response.status_code >= 400:
        raise AlertmanagerRefusedError(
            f"{method} {url}: {response.status_code}: {response.text[:300]}"
        )
    return response.json() if response.content else None


def _api_matchers(matchers: list[Matcher]) -> list[dict[str, Any]]:
    return [
        {
            "name": m.name,
            "value": m.value,
            "isRegex": m.op in ("=~", "!~"),
            "isEqual": m.op in ("=", "=~"),
        }
        for m in matchers
    ]


def _same_matchers(found: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    def key(m: dict[str, Any]) -> tuple[str, str, bool, bool]:
        return (m["name"], m["value"], bool(m["isRegex"]), bool(m.get("isEqual", True)))

    return sorted(map(key, found)) == sorted(map(key, wanted))


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _close(shown: str, wanted: datetime) -> bool:
    """Whether Alertmanager's time (it keeps milliseconds) is `wanted`."""
    return abs(_parse_time(shown) - wanted) < timedelta(milliseconds=1)


class Silence(BaseModel):
    """One of opsflow's silences as Alertmanager shows it."""

    id: str
    comment: str
    state: str
    starts_at: datetime
    ends_at: datetime


@task(cache_policy=NONE, **RETRY_TRANSIENT, timeout_seconds=120)
def read_silences(link: AlertmanagerLink, comment_marker: str) -> list[Silence]:
    """opsflow's unexpired silences whose comment holds `comment_marker` (reads only)."""
    with _session(link) as session:
        found = _call(session, link, "GET", "silences") or []
    return [
        Silence(
            id=s["id"],
            comment=s["comment"],
            state=s["status"]["state"],
            starts_at=_parse_time(s["startsAt"]),
            ends_at=_parse_time(s["endsAt"]),
        )
        for s in found
        if s.get("createdBy") == CREATED_BY
        and comment_marker in s.get("comment", "")
        and s.get("status", {}).get("state") != "expired"
    ]


@task(cache_policy=NONE, **RETRY_TRANSIENT, timeout_seconds=120)
def create_silence(
    link: AlertmanagerLink,
    matchers: list[Matcher],
    starts_at: datetime,
    ends_at: datetime,
    comment: str,
) -> SilenceChange:
    """Silence the alerts `matchers` select from `starts_at` to `ends_at`, unless Alertmanager
    already holds an unexpired silence of opsflow's with this comment, these matchers and
    these times (a start already past is Alertmanager's to move to when it was made).

    Retried on transient errors: a creation whose answer was lost is found the second time.
    """
    logger = get_run_logger()
    wanted = _api_matchers(matchers)
    with _session(link) as session:
        found = _ours(_call(session, link, "GET", "silences"), comment, wanted, starts_at, ends_at)
        if found is not None:
            logger.info("silence %s already mirrors %s", found, comment)
            return SilenceChange.unchanged(
                None, "create_silence", f"silence {found}", "already silenced", silence_id=found
            )
        body = {
            "matchers": wanted,
            "startsAt": _time(starts_at),
            "endsAt": _time(ends_at),
            "createdBy": CREATED_BY,
            "comment": comment,
        }
        answer = _call(session, link, "POST", "silences", json=body)
    if not answer or "silenceID" not in answer:
        raise AlertmanagerRefusedError(f"POST silences: no silenceID in the answer: {answer!r}")
    silence_id = answer["silenceID"]
    logger.info("silence %s until %s: %s", silence_id, _time(ends_at), " ".join(map(str, matchers)))
    return SilenceChange.made(
        None,
        "create_silence",
        f"silence {silence_id}",
        f"created until {_time(ends_at)}",
        silence_id=silence_id,
    )


def _ours(
    silences: list[dict[str, Any]] | None,
    comment: str,
    matchers: list[dict[str, Any]],
    starts_at: datetime,
    ends_at: datetime,
) -> str | None:
    """The id of the unexpired silence of opsflow's with this comment, matchers and times."""
    pending = starts_at > datetime.now(UTC)
    for silence in silences or []:
        if (
            silence.get("createdBy") == CREATED_BY
            and silence.get("comment") == comment
            and silence.get("status", {}).get("state") != "expired"
            and _same_matchers(silence.get("matchers", []), matchers)
            and _close(silence["endsAt"], ends_at)
            and (not pending or _close(silence["startsAt"], starts_at))
        ):
            return silence["id"]
    return None


@task(cache_policy=NONE, **RETRY_TRANSIENT, timeout_seconds=120)
def end_silence(link: AlertmanagerLink, silence_id: str, ends_at: datetime) -> SilenceChange:
    """Make a silence end by `ends_at`: expired at once when that is not in the future, else
    its end moved earlier; unchanged when it is expired, gone, or ends by then already.

    The returned id is the silence's id afterwards (Alertmanager replaces a silence it
    cannot change in place).
    """
    logger = get_run_logger()
    target = f"silence {silence_id}"

    def unchanged(why: str) -> SilenceChange:
        return SilenceChange.unchanged(None, "end_silence", target, why, silence_id=silence_id)

    with _session(link) as session:
        silence = _call(session, link, "GET", f"silence/{silence_id}")
        if silence is None:
            return unchanged("gone")
        if silence["status"]["state"] == "expired":
            return unchanged("expired")
        # A silence cannot end before it starts: one that would is expired (a window
        # cancelled before it began, or closed now).
        if ends_at <= max(datetime.now(UTC), _parse_time(silence["startsAt"])):
            _call(session, link, "DELETE", f"silence/{silence_id}")
            logger.info("silence %s expired", silence_id)
            return SilenceChange.made(None, "end_silence", target, "expired", silence_id=silence_id)
        if _parse_time(silence["endsAt"]) <= ends_at:
            return unchanged(f"ends {silence['endsAt']}")
        body = {
            "id": silence_id,
            "matchers": silence["matchers"],
            "startsAt": silence["startsAt"],
            "endsAt": _time(ends_at),
            "createdBy": silence["createdBy"],
            "comment": silence["comment"],
        }
        answer = _call(session, link, "POST", "silences", json=body) or {}
    new_id = answer.get("silenceID", silence_id)
    logger.info("silence %s now ends %s", new_id, _time(ends_at))
    return SilenceChange.made(
        None, "end_silence", target, f"ends {_time(ends_at)}", silence_id=new_id
    )
