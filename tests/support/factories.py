"""Estates, alerts, records and stand-ins tests make: a small written estate with people's
tokens, Alertmanager webhook bodies from the captured fixtures, events and incidents as the
desk and triage would store them, entitlements and access requests, a desk's silent
wake-ups."""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import yaml

from opsflow.inventory.models import Audience, Entitlement, token_sha256
from opsflow.itsm.access import ResolvedRequest
from opsflow.itsm.records import EventIn, Incident, IncidentCreate, IncidentUpdate
from opsflow.itsm.store.records import Records
from tests.support import PROJECT

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEHtfozhPTtl8AkMOSM3DVfaazlgK6iLBcy+DLgNv9iP"
"""An SSH public key for access requests that never reach a host."""
TOKENS = {"olga": "olga-operator-token", "max": "max-monitor-token", "rita": "rita-requester"}
"""The desk tokens of the small estate's people: olga operates, max monitors, rita requests."""
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
"""When `failure` makes its incidents unless told otherwise."""
ALERTED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""When `alert`'s events occurred unless told otherwise."""
ALERTMANAGER_FIXTURES = PROJECT / "tests" / "fixtures" / "alertmanager"
"""Real payloads captured from Prometheus and Alertmanager (copied from shared/fixtures)."""


def webhook_body(name: str) -> dict:
    """The captured Alertmanager webhook body `name` (firing.json, resolved.json), fresh."""
    return json.loads((ALERTMANAGER_FIXTURES / name).read_text())


def firing(**labels: str) -> dict:
    """The captured firing webhook body, its alert's labels updated with `labels`."""
    body = copy.deepcopy(webhook_body("firing.json"))
    body["alerts"][0]["labels"].update(labels)
    return body


def webhook_alert(**changes: object) -> dict:
    """The captured firing alert with `changes` applied; a `labels` change is merged into the
    alert's labels."""
    alert = copy.deepcopy(webhook_body("firing.json")["alerts"][0])
    labels = changes.pop("labels", {})
    alert.update(changes)
    alert["labels"].update(labels)
    return alert


def alert(fingerprint: str = "a1", status: str = "firing", **extra: object) -> EventIn:
    """An Alertmanager event for app on web1 as the desk stores it, with `extra` fields."""
    fields: dict[str, object] = {
        "source": "alertmanager",
        "fingerprint": fingerprint,
        "status": status,
        "host": "web1",
        "service": "app",
        "labels": {"alertname": "AppDown", "severity": "critical"},
        "annotations": {"summary": "app down"},
        "summary": "app is down on web1",
        "occurred_at": ALERTED_AT,
    }
    return EventIn.model_validate({**fields, **extra})


def stored_events(store: Records) -> list:
    """The events `store` holds that triage has not taken yet."""
    return store.events.pending(10_000)


def entitlement(
    name: str = "web-login",
    group: str = "web",
    privilege: str = "login",
    requesters: Audience | None = None,
    max_duration_hours: float = 8,
) -> Entitlement:
    """An entitlement that approvers approve; by default `web-login`: login on the `web`
    group for requesters, for up to 8 hours."""
    return Entitlement(
        name=name,
        group=group,
        privilege=privilege,
        requesters=requesters or Audience(roles=["requester"]),
        approvers=Audience(roles=["approver"]),
        max_duration_hours=max_duration_hours,
    )


def login_request(
    username: str, reason: str, duration_minutes: float = 60, key: str = PUBLIC_KEY
) -> ResolvedRequest:
    """`username`'s request, checked against the estate, for the default `entitlement()`."""
    return ResolvedRequest(
        entitlement=entitlement(),
        username=username,
        ssh_public_key=key,
        duration_minutes=duration_minutes,
        reason=reason,
    )


def auth(person: str) -> dict[str, str]:
    """The headers of a request to the desk as `person` of the small estate."""
    return {"Authorization": f"Bearer {TOKENS[person]}"}


def write_small_estate(directory: Path) -> Path:
    """A small estate written into `directory`: web1 and web2 (never reached: their host key
    is thrown away), the app service, olga, max and rita with `TOKENS`, one exception rule."""
    key = directory / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    hosts = [
        {"name": f"web{i}", "address": f"127.0.99.{i}", "host_key": public, "groups": ["web"]}
        for i in (1, 2)
    ]
    services = [
        {
            "name": "app",
            "group": "web",
            "health_check": {"kind": "http", "port": 18080},
            "control": {
                "start": ["svc", "start"],
                "stop": ["svc", "stop"],
                "status": ["svc", "status"],
            },
            "impact": 2,
            "runbooks": {"service-down": "restart-service"},
        }
    ]
    people = [
        {"name": "olga", "roles": ["operator"], "token_sha256": token_sha256(TOKENS["olga"])},
        {"name": "max", "roles": ["monitor"], "token_sha256": token_sha256(TOKENS["max"])},
        {"name": "rita", "roles": ["requester"], "token_sha256": token_sha256(TOKENS["rita"])},
    ]
    rules = [
        {
            "name": "down",
            "match": {"alertname": "ServiceDown"},
            "class": "exception",
            "symptom": "service-down",
            "urgency": 1,
        },
    ]
    for name, data in {
        "hosts.yaml": {"hosts": hosts},
        "services.yaml": {"services": services},
        "people.yaml": {"people": people},
        "rules.yaml": {"rules": rules},
    }.items():
        (directory / name).write_text(yaml.safe_dump(data))
    key.unlink()
    key.with_suffix(".pub").unlink()
    return directory


class NoWorkers:
    """A desk's wake-ups (`app.state.wake_ups`) that reach no worker: the requests and grants
    it records stay as it recorded them."""

    def request_submitted(self) -> None:
        """A request was recorded; nobody is told."""

    def access_changed(self) -> None:
        """An access change was recorded; nobody is told."""


def open_service_down(host: str, summary: str) -> Incident:
    """A New service-down incident for app on `host`, with the restart-service runbook."""
    from opsflow.itsm.store.records import open_records

    incident, _ = open_records().correlation.open_or_correlate(
        IncidentCreate(
            host=host,
            service="app",
            symptom="service-down",
            summary=summary,
            impact=2,
            urgency=1,
            runbook="restart-service",
            assignment_group="ops",
            correlation_key=f"{host}/app/{uuid4().hex}",
        ),
        datetime.now(UTC),
        actor="test",
    )
    return incident


def failure(
    store: Records,
    host: str = "web1",
    service: str = "app",
    symptom: str = "service-down",
    at: datetime = NOW,
    resolve_after: timedelta | None = timedelta(minutes=5),
) -> Incident:
    """One incident of `symptom` on `service`, resolved after `resolve_after` (None: left open)."""
    incident, created = store.correlation.open_or_correlate(
        IncidentCreate(
            host=host,
            service=service,
            symptom=symptom,
            summary=f"{symptom} of {service} on {host}",
            impact=2,
            urgency=1,
            correlation_key=f"{host}/{service}/{symptom}/{at.isoformat()}",
        ),
        at,
        actor="test",
    )
    assert created
    if resolve_after is not None:
        store.incidents.update(
            incident.id,
            IncidentUpdate(state="Resolved", resolution_code="auto-remediated"),
            "test",
            at + resolve_after,
        )
    return store.incidents.get(incident.id)
