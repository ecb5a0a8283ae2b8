"""A desk process's own log: opsflow's INFO lines, an access line per request, JSON lines
when asked, and no secret in it whatever the requests carried."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import make_url

from opsflow.desk.access_log import target
from tests.support.factories import TOKENS, auth, firing
from tests.support.serving import desk_process
from tests.support.waiting import wait_for

QUERY_SECRET = "query-secret-5c1d"
LABEL_SECRET = "label-secret-77ab"
WRONG_TOKEN = "wrong-token-e93f"


def _requests(url: str) -> None:
    """What a desk meets in a day: a token in the header and one in the query, a body with
    a secret-looking label next to a bad field, a stranger, a path forging a log line."""
    assert requests.get(f"{url}/api/v1/health", headers=auth("olga"), timeout=30).ok
    listed = requests.get(
        f"{url}/api/v1/incidents?limit=5&access_token={QUERY_SECRET}",
        headers=auth("olga"),
        timeout=30,
    )
    assert listed.ok
    body = firing(password=LABEL_SECRET)
    body["alerts"].append({**body["alerts"][0], "startsAt": "not a time"})
    stored = requests.post(
        f"{url}/api/v1/events/alertmanager", json=body, headers=auth("max"), timeout=30
    )
    assert stored.status_code == 202 and stored.json()["rejected"]
    stranger = requests.get(
        f"{url}/api/v1/incidents", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}, timeout=30
    )
    assert stranger.status_code == 401
    forged = requests.get(f"{url}/nothing%0A2026-01-01 INFO forged line", timeout=30)
    assert forged.status_code == 404


def _secrets(records_url: str) -> list[str]:
    password = make_url(records_url).password
    return [
        *TOKENS.values(),
        QUERY_SECRET,
        LABEL_SECRET,
        WRONG_TOKEN,
        *([password] if password else []),
    ]


def _run(desk_estate: Path, log: Path) -> str:
    with desk_process(desk_estate, log) as desk:
        _requests(desk.url)
        wait_for(lambda: "forged" in log.read_text(), 30, "the last access line")
    return log.read_text()


@pytest.mark.parametrize("records_url", ["postgresql"], indirect=True)
def test_the_desk_log_says_what_it_did_and_nothing_secret(
    prefect_server, records_url: str, desk_estate: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", records_url)
    text = _run(desk_estate, tmp_path / "desk.log")
    lines = text.splitlines()

    for own in ("INFO opsflow.desk.server[", "INFO opsflow.desk.estate[", "INFO uvicorn.error["):
        assert any(own in line for line in lines), f"no {own} line:\n{text}"
    access = [line for line in lines if " opsflow.desk.access[" in line]
    for expected in (
        "GET /api/v1/health 200 ",
        "GET /api/v1/incidents?limit=5&access_token=*** 200 ",
        "POST /api/v1/events/alertmanager 202 ",
        "GET /api/v1/incidents 401 ",
        "GET /nothing\\x0a2026-01-01 INFO forged line 404 ",
    ):
        assert any(expected in line and "ms 127.0.0.1:" in line for line in access), expected
    assert not any(line.startswith("2026-01-01 INFO forged") for line in lines)
    assert any("not stored" in line for line in lines), "the refused alert is logged"
    for secret in _secrets(records_url):
        assert secret not in text


@pytest.mark.parametrize("records_url", ["postgresql"], indirect=True)
def test_json_logs_are_one_object_a_line(
    prefect_server, records_url: str, desk_estate: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", records_url)
    monkeypatch.setenv("OPSFLOW_LOG_FORMAT", "json")
    text = _run(desk_estate, tmp_path / "desk.log")

    records = [json.loads(line) for line in text.splitlines()]
    assert {"opsflow.desk.server", "opsflow.desk.estate", "opsflow.desk.access"} <= {
        r["logger"] for r in records
    }
    refused = [r for r in records if r["logger"] == "opsflow.desk.access" and r["status"] == 401]
    [stranger] = refused
    assert stranger["method"] == "GET" and stranger["path"] == "/api/v1/incidents"
    assert stranger["duration_ms"] >= 0 and stranger["client"].startswith("127.0.0.1:")
    assert stranger["level"] == "INFO" and stranger["time"].endswith("+00:00")
    for secret in _secrets(records_url):
        assert secret not in text


def test_query_values_named_like_secrets_are_masked() -> None:
    scope = {"path": "/x\r\n", "query_string": b"Token=a&apiKey=b&passwd=c&limit=5&q=%0A"}
    assert target(scope) == "/x\\x0d\\x0a?Token=***&apiKey=***&passwd=***&limit=5&q=\\x0a"
