"""A desk over a real SQLite store and a small written estate, served in-process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.inventory.models import token_sha256
from opsflow.itsm.store.records import Records

TOKENS = {"olga": "olga-operator-token", "max": "max-monitor-token", "rita": "rita-requester"}


@pytest.fixture(scope="session")
def desk_estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("desk-estate")
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


@pytest.fixture
def store(records_url: str) -> Records:
    return Records(records_url)


@pytest.fixture
def desk(store: Records, desk_estate: Path) -> TestClient:
    return TestClient(create_app(store, EstateCache(desk_estate)))


def auth(person: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[person]}"}
