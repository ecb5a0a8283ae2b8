"""Alertmanager silences: create one, or end one, through Alertmanager's API v2.

opsflow mirrors its maintenance windows as silences so that every receiver of a team's
Alertmanager (pager, chat, opsflow itself) is quiet during them, not only opsflow's triage.
Each task reads Alertmanager's state first and acts only when needed, so each is safe to
retry: a silence is recognised as ours by its `createdBy`, comment and matchers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel

from opsflow.errors import PermanentError, TransientError
from opsflow.inventory.matchers import Matcher
from opsflow.inventory.models import AlertmanagerLink
from opsflow.tasks.retry import RETRY_TRANSIENT

CREATED_BY = "opsflow"
"""The `createdBy` of every silence opsflow makes."""


class AlertmanagerUnavailableError(TransientError):
    """Alertmanager did not answer in time, or answered 5xx."""


class AlertmanagerRefusedError(PermanentError):
    """Alertmanager answered 4xx: the credentials or the silence are wrong."""


class SilenceChange(BaseModel):
    """What a silence task did: the silence's id, whether it changed anything, and what."""

    silence_id: str
    changed: bool
    detail: str


def _session(link: AlertmanagerLink) -> requests.Session:
    """A session with the credentials block the estate names, if it names one."""
    if link.credentials is None:
        return requests.Session()
    from opsflow.blocks.alertmanager import AlertmanagerCredentials

    try:
        block = AlertmanagerCredentials.load(link.credentials)
    except ValueError as exc:
        raise PermanentError(
            f"alertmanager.credentials: no Alertmanager credentials block "
            f"{link.credentials!r}: {exc}"
        ) from None
    return block.get_client()


def _call(link: AlertmanagerLink, method: str, path: str, **kwargs: Any) -> Any:
    """One API call with its own connect and read timeouts; the JSON answer, None for 404."""
    url = f"{str(link.url).rstrip('/')}/api/v2/{path}"
    with _session(link) as session:
        try:
            response = session.request(
                method, url, timeout=(link.timeout_s, link.timeout_s), **kwargs
            )
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
    return [
        Silence(
            id=s["id"],
            comment=s["comment"],
            state=s["status"]["state"],
            starts_at=_parse_time(s["startsAt"]),
            ends_at=_parse_time(s["endsAt"]),
        )
        for s in _call(link, "GET", "silences") or []
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
    pending = starts_at > datetime.now(UTC)
    for silence in _call(link, "GET", "silences") or []:
        if (
            silence.get("createdBy") == CREATED_BY
            and silence.get("comment") == comment
            and silence.get("status", {}).get("state") != "expired"
            and _same_matchers(silence.get("matchers", []), wanted)
            and _close(silence["endsAt"], ends_at)
            and (not pending or _close(silence["startsAt"], starts_at))
        ):
            logger.info("silence %s already mirrors %s", silence["id"], comment)
            return SilenceChange(
                silence_id=silence["id"], changed=False, detail="unchanged: already silenced"
            )
    body = {
        "matchers": wanted,
        "startsAt": _time(starts_at),
        "endsAt": _time(ends_at),
        "createdBy": CREATED_BY,
        "comment": comment,
    }
    answer = _call(link, "POST", "silences", json=body)
    if not answer or "silenceID" not in answer:
        raise AlertmanagerRefusedError(f"POST silences: no silenceID in the answer: {answer!r}")
    silence_id = answer["silenceID"]
    logger.info("silence %s until %s: %s", silence_id, _time(ends_at), " ".join(map(str, matchers)))
    return SilenceChange(
        silence_id=silence_id, changed=True, detail=f"created until {_time(ends_at)}"
    )


@task(cache_policy=NONE, **RETRY_TRANSIENT, timeout_seconds=120)
def end_silence(link: AlertmanagerLink, silence_id: str, ends_at: datetime) -> SilenceChange:
    """Make a silence end by `ends_at`: expired at once when that is not in the future, else
    its end moved earlier; unchanged when it is expired, gone, or ends by then already.

    The returned id is the silence's id afterwards (Alertmanager replaces a silence it
    cannot change in place).
    """
    logger = get_run_logger()
    silence = _call(link, "GET", f"silence/{silence_id}")
    if silence is None:
        return SilenceChange(silence_id=silence_id, changed=False, detail="unchanged: gone")
    if silence["status"]["state"] == "expired":
        return SilenceChange(silence_id=silence_id, changed=False, detail="unchanged: expired")
    if ends_at <= datetime.now(UTC):
        _call(link, "DELETE", f"silence/{silence_id}")
        logger.info("silence %s expired", silence_id)
        return SilenceChange(silence_id=silence_id, changed=True, detail="expired")
    if _parse_time(silence["endsAt"]) <= ends_at:
        return SilenceChange(
            silence_id=silence_id, changed=False, detail=f"unchanged: ends {silence['endsAt']}"
        )
    body = {
        "id": silence_id,
        "matchers": silence["matchers"],
        "startsAt": silence["startsAt"],
        "endsAt": _time(ends_at),
        "createdBy": silence["createdBy"],
        "comment": silence["comment"],
    }
    answer = _call(link, "POST", "silences", json=body) or {}
    new_id = answer.get("silenceID", silence_id)
    logger.info("silence %s now ends %s", new_id, _time(ends_at))
    return SilenceChange(silence_id=new_id, changed=True, detail=f"ends {_time(ends_at)}")
