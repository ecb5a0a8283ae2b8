"""The catalog's input rules: who may request what, with which inputs, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from opsflow.inventory.models import CatalogItem, Estate, Host, Person, Service
from opsflow.itsm.catalog import InvalidRequestError, NotEntitledError, validate_request
from opsflow.lab.catalog import lab_catalog

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


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


@pytest.mark.parametrize(
    ("item", "inputs", "field", "reason"),
    [
        (
            "request-service-restart",
            {"service": "nope", "host": "lab01"},
            "inputs.service",
            "no service 'nope' in the estate (choices: app)",
        ),
        (
            "request-service-restart",
            {"service": "app", "host": "lab03"},
            "inputs.host",
            "host 'lab03' does not run service 'app' (its hosts: lab01, lab02)",
        ),
        (
            "request-service-restart",
            {"service": "app", "host": "lab09"},
            "inputs.host",
            "no host 'lab09' in the estate",
        ),
        ("request-service-restart", {"service": "app"}, "inputs.host", "required"),
        (
            "request-service-restart",
            {"service": "app", "host": "lab01", "colour": "red"},
            "inputs.colour",
            "not an input of request-service-restart",
        ),
        (
            "clear-old-logs",
            {"service": "app", "older_than_days": 9999},
            "inputs.older_than_days",
            "9999 is above the maximum 365",
        ),
        (
            "clear-old-logs",
            {"service": "app", "older_than_days": 0},
            "inputs.older_than_days",
            "0 is below the minimum 1",
        ),
        (
            "clear-old-logs",
            {"service": "app", "older_than_days": "7; reboot"},
            "inputs.older_than_days",
            "is not an integer",
        ),
        (
            "clear-old-logs",
            {"service": "app", "older_than_days": True},
            "inputs.older_than_days",
            "expected an integer, got bool",
        ),
        (
            "create-app-account",
            {"service": "app", "username": "x; rm -rf /"},
            "inputs.username",
            "does not match the pattern",
        ),
        (
            "create-app-account",
            {"service": "app", "username": "$(reboot)"},
            "inputs.username",
            "does not match the pattern",
        ),
        (
            "create-app-account",
            {"service": "app", "username": "svc\nroot"},
            "inputs.username",
            "control character",
        ),
        (
            "create-app-account",
            {"service": "app", "username": "a" * 40},
            "inputs.username",
            "longer than 32 characters",
        ),
        ("diagnostic-bundle", {"host": ["lab01"]}, "inputs.host", "got list"),
        ("no-such-item", {}, "item", "no catalog item 'no-such-item'"),
    ],
)
def test_bad_requests_name_the_field_and_reason(small_estate, item, inputs, field, reason) -> None:
    found = problems(small_estate, item, inputs)
    assert field in found, found
    assert reason in found[field]


def test_every_problem_is_reported_at_once(small_estate: Estate) -> None:
    found = problems(small_estate, "create-app-account", {"service": "x", "username": "A B"})
    assert set(found) == {"inputs.service", "inputs.username"}


def test_who_may_request(small_estate: Estate) -> None:
    with pytest.raises(NotEntitledError, match="mon may not request request-service-restart"):
        validate_request(
            small_estate, "request-service-restart", {"service": "app", "host": "lab01"}, "mon"
        )
    assert "requester" in problems(small_estate, "request-service-restart", {}, requester="nobody")
