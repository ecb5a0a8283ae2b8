"""Estates, records and stand-ins tests make: a small written estate with people's tokens,
incidents as triage would open them, a desk's silent wake-ups."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import yaml

from opsflow.inventory.models import token_sha256
from opsflow.itsm.records import Incident, IncidentCreate, IncidentUpdate
from opsflow.itsm.store.records import Records

TOKENS = {"olga": "olga-operator-token", "max": "max-monitor-token", "rita": "rita-requester"}
"""The desk tokens of the small estate's people: olga operates, max monitors, rita requests."""
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
"""When `failure` makes its incidents unless told otherwise."""


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
