"""No event stops triage (issue 8, finding 5): after a year-9999 alert and an alert with only
`instance` and `job` labels, a real outage still opens its incident within seconds, and each
of the first two is triaged to an incident on the CI it names or marked failed with a reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import requests

from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.people import token_file
from tests.support.waiting import wait_for

RESTORE_TIMEOUT_S = 90


def webhook(*alerts: dict) -> dict:
    return {"version": "4", "status": "firing", "receiver": "opsflow", "alerts": list(alerts)}


def alert(labels: dict[str, str], starts_at: str, fingerprint: str) -> dict:
    return {
        "status": "firing",
        "labels": {"severity": "critical", **labels},
        "annotations": {"summary": labels["alertname"]},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def outcome(fingerprint: str) -> str | None:
    """What triage made of an alert: the incident's CI, or the failure's reason."""
    store = open_records()
    [event] = store.events.with_fingerprint(fingerprint) or [None]
    if event is None or event.triaged_at is None:
        return None
    if event.incident_id is not None:
        incident = store.incidents.get(event.incident_id)
        return f"incident {incident.service}@{incident.host}"
    reasons = [e.reason for e in store.events.failed(1000) if e.id == event.id]
    return f"failed: {reasons[0]}" if reasons else None


def test_poison_events_do_not_stop_a_real_outage_from_being_restored(lab_desk, lab) -> None:
    host = lab.hosts[0]
    headers = {"Authorization": f"Bearer {token_file(lab.directory, 'alertmanager').read_text()}"}
    run = uuid.uuid4().hex[:12]
    now = datetime.now(UTC).isoformat()
    future = alert(
        {"alertname": "ClockFromTheFuture", "host": host.name, "service": "app"},
        "9999-12-31T23:59:59Z",
        f"a{run}",
    )
    bare = alert(
        {"alertname": "InstanceDown", "instance": f"{host.address}:9100", "job": "app"},
        now,
        f"b{run}",
    )
    first = requests.post(
        f"{lab_desk.url}/api/v1/events/alertmanager",
        json=webhook(future, bare),
        headers=headers,
        timeout=10,
    )
    assert first.status_code == 202, first.text

    break_host(host.name, "service", lab.directory)
    outage = alert(
        {"alertname": "ServiceDown", "host": host.name, "service": "app"}, now, f"c{run}"
    )
    second = requests.post(
        f"{lab_desk.url}/api/v1/events/alertmanager",
        json=webhook(outage),
        headers=headers,
        timeout=10,
    )
    assert second.status_code == 202, second.text

    wait_for(lambda: outcome(f"c{run}"), 15, "the outage's incident to open")
    for fingerprint in (f"a{run}", f"b{run}"):
        said = wait_for(lambda fp=fingerprint: outcome(fp), 15, f"triage of {fingerprint}")
        assert said == f"incident app@{host.name}" or said.startswith("failed: "), said
    store = open_records()
    [event] = store.events.with_fingerprint(f"c{run}")
    resolved = wait_for(
        lambda: (i := store.incidents.get(event.incident_id)).state == "Resolved" and i,
        RESTORE_TIMEOUT_S,
        "the outage to be restored",
    )
    assert (resolved.runbook, resolved.resolution_code) == ("restart-service", "auto-remediated")
    health = requests.get(f"{lab_desk.url}/api/v1/health", timeout=10).json()
    assert health["triage"]["failing"] is False
