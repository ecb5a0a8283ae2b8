"""The catalog's input rules: who may request what, with which inputs, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from opsflow.inventory.models import CatalogItem, Estate, Host, Person, Service
from opsflow.itsm.catalog import InvalidRequestError, NotEntitledError, validate_request
from opsflow.lab.catalog import lab_catalog

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def small_estate() -> Estate:
    hosts = [
        Host(name=f"lab0{i}", address=f"127.0.99.{i}", groups=["lab", "web" if i % 2 else "db"])
        for i in (1, 2, 3)
    ]
    app = Service(
        name="app",
        hosts=["lab01", "lab02"],
        health_check={"kind": "http", "port": 18080},
        log_dir="/var/log/app",
    )
    people = [
        Person(name="carol", roles=["requester"]),
        Person(name="bob", roles=["approver"]),
        Person(name="mon", roles=["monitor"]),
    ]
    catalog = [CatalogItem.model_validate(item) for item in lab_catalog()]
    return Estate(hosts=hosts, services=[app], people=people, catalog=catalog)


def problems(estate: Estate, item: str, inputs: dict, requester: str = "carol") -> dict:
    with pytest.raises(InvalidRequestError) as caught:
        validate_request(estate, item, inputs, requester)
    return dict(caught.value.problems)


def test_a_catalog_written_with_the_first_spelling_still_loads() -> None:
    current = lab_catalog()[0]
    first = {k: v for k, v in current.items() if not k.startswith("fulfill")}
    first |= {
        "fulfilment": current["fulfillment"],
        "fulfil_within_minutes": current["fulfill_within_minutes"],
    }
    assert CatalogItem.model_validate(first) == CatalogItem.model_validate(current)
    with pytest.raises(ValueError, match="fulfilment"):
        CatalogItem.model_validate({**current, "fulfilment": current["fulfillment"]})


def test_valid_inputs_are_normalised(small_estate: Estate) -> None:
    item, person, inputs = validate_request(
        small_estate, "clear-old-logs", {"service": "app", "older_than_days": "14"}, "carol"
    )
    assert (item.name, person.name, inputs) == (
        "clear-old-logs",
        "carol",
        {"service": "app", "older_than_days": 14},
    )
    _, _, optional_left_out = validate_request(
        small_estate, "clear-old-logs", {"service": "app"}, "carol"
    )
    assert optional_left_out == {"service": "app"}


BAD_REQUESTS = yaml.safe_load((FIXTURES / "catalog" / "bad_requests.yaml").read_text())
"""Requests validation refuses, each with the field its refusal names and (part of) why."""


@pytest.mark.parametrize(
    "bad", BAD_REQUESTS, ids=[f"{b['item']}-{b['field']}" for b in BAD_REQUESTS]
)
def test_bad_requests_name_the_field_and_reason(small_estate: Estate, bad: dict) -> None:
    found = problems(small_estate, bad["item"], bad["inputs"])
    assert bad["field"] in found, found
    assert bad["reason"] in found[bad["field"]]


def test_every_problem_is_reported_at_once(small_estate: Estate) -> None:
    found = problems(small_estate, "create-app-account", {"service": "x", "username": "A B"})
    assert set(found) == {"inputs.service", "inputs.username"}


def test_who_may_request(small_estate: Estate) -> None:
    with pytest.raises(NotEntitledError, match="mon may not request request-service-restart"):
        validate_request(
            small_estate, "request-service-restart", {"service": "app", "host": "lab01"}, "mon"
        )
    assert "requester" in problems(small_estate, "request-service-restart", {}, requester="nobody")
