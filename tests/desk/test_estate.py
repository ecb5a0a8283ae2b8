"""A broken estate file does not stop the desk: the last good estate stays in use, operators
are told what is wrong (health, /metrics), nobody else is, and a fixed file is picked up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.inventory.models import token_sha256
from opsflow.itsm.store.records import Records
from tests.support.factories import auth, firing, stored_events
from tests.support.metrics import sample
from tests.support.waiting import wait_for

BREAKAGES = {
    "people-typo": ("people.yaml", lambda text: text.replace("roles:", "rolez:", 1)),
    "services-not-yaml": ("services.yaml", lambda text: text + "\n  - [unclosed\n"),
    "stray-file": ("hosts.yml", lambda text: "hosts: []\n"),
}


@pytest.fixture
def estate_dir(desk_estate: Path, tmp_path: Path) -> Path:
    """A copy of the desk's estate that a test may break."""
    return Path(shutil.copytree(desk_estate, tmp_path / "estate"))


def _desk(store: Records, estate_dir: Path) -> TestClient:
    return TestClient(create_app(store, EstateCache(estate_dir, recheck_s=0)))


def _break(estate_dir: Path, case: str) -> str:
    name, mangle = BREAKAGES[case]
    path = estate_dir / name
    path.write_text(mangle(path.read_text() if path.exists() else ""))
    return name


def _failing_gauge(desk_client: TestClient) -> str:
    return f"{sample(desk_client.get('/metrics').text, 'opsflow_estate_load_failing'):g}"


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_a_broken_estate_file_leaves_intake_running_on_the_last_good_estate(
    store: Records, estate_dir: Path, case: str
) -> None:
    desk_client = _desk(store, estate_dir)
    assert desk_client.get("/api/v1/health").json()["status"] == "ok"
    assert _failing_gauge(desk_client) == "0"

    broken = _break(estate_dir, case)

    answer = desk_client.post("/api/v1/events/alertmanager", json=firing(), headers=auth("max"))
    assert answer.status_code == 202, answer.text
    assert [e.labels["host"] for e in stored_events(store)] == ["h1"]
    assert desk_client.get("/api/v1/me", headers=auth("rita")).status_code == 200

    operator = desk_client.get("/api/v1/health", headers=auth("olga")).json()
    assert operator["status"] == "degraded"
    assert operator["estate"]["failing"] is True
    assert operator["estate"]["loaded_at"] is not None
    assert any(p.startswith(broken) for p in operator["estate"]["problems"]), operator
    for headers in ({}, auth("rita"), auth("max"), {"Authorization": "Bearer guess"}):
        seen = desk_client.get("/api/v1/health", headers=headers)
        assert seen.json()["status"] == "degraded"
        assert "estate" not in seen.json() and broken not in seen.text
    assert _failing_gauge(desk_client) == "1"


def test_a_fixed_estate_is_used_again(store: Records, estate_dir: Path) -> None:
    desk_client = _desk(store, estate_dir)
    _break(estate_dir, "people-typo")
    assert desk_client.get("/api/v1/health", headers=auth("olga")).json()["status"] == "degraded"

    people = yaml.safe_load((estate_dir / "people.yaml").read_text().replace("rolez:", "roles:"))
    people["people"].append(
        {"name": "nina", "roles": ["monitor"], "token_sha256": token_sha256("nina-new-token")}
    )
    (estate_dir / "people.yaml").write_text(yaml.safe_dump(people))

    nina = {"Authorization": "Bearer nina-new-token"}
    answer = desk_client.post("/api/v1/events/alertmanager", json=firing(), headers=nina)
    assert answer.status_code == 202, answer.text
    assert desk_client.get("/api/v1/health", headers=auth("olga")).json()["status"] == "ok"
    assert _failing_gauge(desk_client) == "0"


def test_no_estate_yet_answers_503_until_one_loads(store: Records, estate_dir: Path) -> None:
    people = estate_dir / "people.yaml"
    good = people.read_text()
    people.write_text(good.replace("roles:", "rolez:", 1))
    desk_client = _desk(store, estate_dir)

    answer = desk_client.post("/api/v1/events/alertmanager", json=firing(), headers=auth("max"))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"].isdigit()
    assert "rolez" not in answer.text
    assert desk_client.get("/api/v1/health").json()["status"] == "degraded"
    assert stored_events(store) == []

    people.write_text(good)
    wait_for(
        lambda: (
            desk_client.post(
                "/api/v1/events/alertmanager", json=firing(), headers=auth("max")
            ).status_code
            == 202
        ),
        10,
        "the fixed estate to be used",
    )
    assert len(stored_events(store)) == 1
