"""The desk's API fuzzed from its own OpenAPI: every operation, a token of every role.

Schemathesis generates valid and invalid requests for each operation; whatever comes in,
the desk must answer without a 5xx and with a response its OpenAPI declares.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.inventory.models import token_sha256
from opsflow.itsm.store.records import Records
from opsflow.lab.people import PEOPLE, write_people_and_rules

EXAMPLES_PER_OPERATION = 12
"""Per operation, role and mode (valid, invalid): 29 x 5 x 2 x 12 requests in about 2 minutes."""
ROLES = ("operator", "approver", "requester", "monitor", "admin")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ADMIN_TOKEN = "fuzz-admin-token"


@pytest.fixture(scope="module")
def fuzzed(
    prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    """The desk over a fresh store and the lab's people plus an admin: app, role -> token.

    The estate has no hosts, so what an operation would do on hosts (a review of access)
    runs for real and touches none.
    """
    directory = tmp_path_factory.mktemp("fuzz")
    estate = directory / "estate"
    estate.mkdir()
    for name, section in (("hosts.yaml", "hosts"), ("services.yaml", "services")):
        (estate / name).write_text(yaml.safe_dump({section: []}))
    tokens = write_people_and_rules(estate, directory / "lab")
    people_file = estate / "people.yaml"
    people = yaml.safe_load(people_file.read_text())
    people["people"].append(
        {"name": "ada", "roles": ["admin"], "token_sha256": token_sha256(ADMIN_TOKEN)}
    )
    people_file.write_text(yaml.safe_dump(people))
    by_role = {p["roles"][0]: tokens[p["name"]] for p in PEOPLE}
    by_role["admin"] = ADMIN_TOKEN
    app = create_app(Records(f"sqlite:///{directory / 'desk.db'}"), EstateCache(estate))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPSFLOW_INVENTORY", str(estate))
        yield app, by_role


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_every_operation_answers_within_its_schema(fuzzed, role: str) -> None:
    app, tokens = fuzzed
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    if role == "monitor":  # monitors only post events
        served = TestClient(app).post(
            "/api/v1/events", json={"source": "fuzz", "summary": "guard"}, headers=headers
        )
    else:
        served = TestClient(app).get("/api/v1/me", headers=headers)
    assert served.is_success, f"the desk must serve {role} before it is fuzzed: {served.text}"
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29

    for operation in operations:
        for mode in GenerationMode:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def answers_within_schema(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                answers_within_schema()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong
            except (Exception, BaseExceptionGroup) as exc:  # all operations run; failures together
                failures.append(f"{operation.label} ({mode.value}): {exc}")

    assert not failures, f"{len(failures)} failing as {role}:\n\n" + "\n\n".join(failures)
