"""Check a service request against the catalog: who may ask, and whether its inputs fit.

Inputs of type service, host and host_group choose from the estate, so a request can only
name things that exist; when an item has a service input, a host input must be one of that
service's hosts. Every problem names its field (`item`, `inputs.NAME`) and the reason, and
all of them are reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opsflow.errors import PermanentError
from opsflow.inventory.models import CatalogInput, CatalogItem, Estate, Person
from opsflow.itsm.requests import InputValue

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")


class InvalidRequestError(PermanentError, ValueError):
    """A request does not fit its catalog item; `problems` holds (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


class NotEntitledError(PermanentError, PermissionError):
    """The person may not request this catalog item."""


def find_item(estate: Estate, name: str) -> CatalogItem:
    """The catalog item called `name`; `InvalidRequestError` on field `item` otherwise."""
    try:
        return estate.catalog_item(name)
    except KeyError:
        known = ", ".join(i.name for i in estate.catalog) or "the catalog is empty"
        raise InvalidRequestError(
            [("item", f"no catalog item {name!r} (items: {known})")]
        ) from None


def check_requester(item: CatalogItem, person: Person) -> None:
    """Refuse a person the item's `requesters` audience does not admit."""
    if not item.requesters.admits(person):
        raise NotEntitledError(f"{person.name} may not request {item.name}")


def _service_input(item: CatalogItem) -> CatalogInput | None:
    services = [i for i in item.inputs if i.type == "service"]
    return services[0] if len(services) == 1 else None


def input_choices(
    spec: CatalogInput, estate: Estate, service: str | None = None
) -> list[str] | None:
    """The values an input may take, or None for free string and integer inputs.

    Args:
        spec: the input.
        estate: where service, host and host_group choices come from.
        service: for a host input, limit the choices to this service's hosts.
    """
    if spec.type == "choice":
        return list(spec.choices)
    if spec.type == "service":
        return [s.name for s in estate.services]
    if spec.type == "host_group":
        return sorted(estate.groups)
    if spec.type == "host":
        if service is not None:
            try:
                return [h.name for h in estate.hosts_of(estate.service(service))]
            except KeyError:
                pass
        return [h.name for h in estate.hosts]
    return None


def _check_string(spec: CatalogInput, value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, f"expected text, got {type(value).__name__}"
    if len(value) > spec.max_length:
        return None, f"longer than {spec.max_length} characters"
    if _CONTROL.search(value):
        return None, "holds a control character"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        return None, f"{value!r} does not match the pattern {spec.pattern}"
    return value, None


def _check_integer(spec: CatalogInput, value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None, f"expected an integer, got {type(value).__name__}"
    if isinstance(value, str):
        if not _INTEGER.match(value.strip()):
            return None, f"{value!r} is not an integer"
        value = int(value.strip())
    if spec.minimum is not None and value < spec.minimum:
        return None, f"{value} is below the minimum {spec.minimum}"
    if spec.maximum is not None and value > spec.maximum:
        return None, f"{value} is above the maximum {spec.maximum}"
    return value, None


def _check_choice(
    spec: CatalogInput, value: Any, estate: Estate, service: str | None
) -> tuple[str | None, str | None]:
    choices = input_choices(spec, estate, service) or []
    if not isinstance(value, str):
        return None, f"expected one of {', '.join(choices)}, got {type(value).__name__}"
    if value in choices:
        return value, None
    shown = ", ".join(choices) or "none"
    if spec.type == "host" and service is not None and any(h.name == value for h in estate.hosts):
        return None, f"host {value!r} does not run service {service!r} (its hosts: {shown})"
    what = {"choice": "choice", "service": "service", "host": "host", "host_group": "host group"}
    where = "" if spec.type == "choice" else " in the estate"
    return None, f"no {what[spec.type]} {value!r}{where} (choices: {shown})"


def validate_inputs(
    item: CatalogItem, inputs: Mapping[str, Any], estate: Estate
) -> dict[str, InputValue]:
    """The request's inputs checked and normalised against the item and the estate.

    Integers given as text become integers; missing optional inputs are left out.

    Raises:
        InvalidRequestError: listing every problem, each naming `inputs.NAME` and the reason.
    """
    problems: list[tuple[str, str]] = []
    names = {spec.name for spec in item.inputs}
    for name in inputs:
        if name not in names:
            listed = ", ".join(sorted(names)) or "none"
            problems.append(
                (f"inputs.{name}", f"not an input of {item.name} (its inputs: {listed})")
            )
    service_spec = _service_input(item)
    service = inputs.get(service_spec.name) if service_spec else None
    service = service if isinstance(service, str) else None
    valid: dict[str, InputValue] = {}
    for spec in item.inputs:
        value = inputs.get(spec.name)
        if value is None or value == "":
            if spec.required:
                problems.append((f"inputs.{spec.name}", "required"))
            continue
        checked: InputValue | None
        if spec.type == "string":
            checked, reason = _check_string(spec, value)
        elif spec.type == "integer":
            checked, reason = _check_integer(spec, value)
        else:
            checked, reason = _check_choice(spec, value, estate, service)
        if reason is not None:
            problems.append((f"inputs.{spec.name}", reason))
        elif checked is not None:
            valid[spec.name] = checked
    if problems:
        raise InvalidRequestError(problems)
    return valid


def validate_request(
    estate: Estate, item_name: str, inputs: Mapping[str, Any], requester: str
) -> tuple[CatalogItem, Person, dict[str, InputValue]]:
    """The item, the requester and the valid inputs of a request, or why it is refused.

    Raises:
        InvalidRequestError: no such item, unknown requester, or inputs that do not fit.
        NotEntitledError: the requester may not request the item.
    """
    item = find_item(estate, item_name)
    person = estate.person(requester)
    if person is None:
        raise InvalidRequestError([("requester", f"no person {requester!r} in the estate")])
    check_requester(item, person)
    return item, person, validate_inputs(item, inputs, estate)
