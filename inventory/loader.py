"""Read an estate directory of YAML files into an `Estate`, or one error listing every problem."""

from __future__ import annotations

from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from opsflow.errors import InventoryError
from opsflow.inventory.models import (
    Audience,
    CatalogItem,
    Entitlement,
    Estate,
    EstateSettings,
    EventRule,
    Host,
    MaintenanceWindow,
    Person,
    Service,
    Team,
)
from opsflow.inventory.runbooks import SHIPPED_RUNBOOKS, DeclaredRunbook
from opsflow.inventory.types import SSHPublicKey

SECTIONS: dict[str, dict[str, type[BaseModel]]] = {
    "hosts.yaml": {"hosts": Host},
    "services.yaml": {"services": Service},
    "people.yaml": {"people": Person, "teams": Team},
    "rules.yaml": {"rules": EventRule},
    "maintenance.yaml": {"maintenance": MaintenanceWindow},
    "catalog.yaml": {"catalog": CatalogItem},
    "entitlements.yaml": {"entitlements": Entitlement},
    "runbooks.yaml": {"runbooks": DeclaredRunbook},
}
"""Each estate file and the lists it may hold, with the model of their entries."""

ESTATE_FILES = {"estate.yaml", *SECTIONS}

_KEY = TypeAdapter(SSHPublicKey)


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problems.append(f"{path.name}{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
    except OSError as exc:
        problems.append(f"{path.name}: cannot be read: {exc.strerror}")
    return None


def _describe(error: ErrorDetails, item: Any = None) -> str:
    """One validation error as `field: reason`; in a runbook, the step is named by its
    phase, position and name (`remediate[1] (put-in-service): http.method: …`)."""
    loc = [p for p in error["loc"] if not str(p).startswith("function-")]
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    step = ""
    if (
        isinstance(item, dict)
        and len(loc) >= 2
        and loc[0] in ("diagnose", "remediate", "verify")
        and isinstance(loc[1], int)
    ):
        steps = item.get(loc[0])
        raw = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        step = f"{loc[0]}[{loc[1]}]" + (f" ({name})" if isinstance(name, str) else "")
        loc = loc[2:]
        if not loc:
            return f"{step}: {message}"
        step += ": "
    if not loc and not step and error["type"] == "value_error":
        return message  # a check across fields: the message names what it is about
    field = ".".join(str(p) for p in loc)
    return f"{step}{field or '(entry)'}: {message}"


M = TypeVar("M", bound=BaseModel)


def _sections(path: Path, data: Any, problems: list[str]) -> dict[str, list[BaseModel]]:
    """Validate each list in one estate file, one problem per bad field, naming the entry."""
    models = SECTIONS[path.name]
    found: dict[str, list[BaseModel]] = {key: [] for key in models}
    if data is None:
        return found
    if not isinstance(data, dict) or not set(data) <= set(models):
        keys = ", ".join(repr(k) for k in models)
        problems.append(f"{path.name}: expected a mapping with the keys {keys}")
        return found
    for key, items in data.items():
        if not isinstance(items, list):
            problems.append(f"{path.name}: {key}: expected a list")
            continue
        for index, item in enumerate(items):
            label = f"{key}[{index}]"
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                label += f" ({item['name']})"
            try:
                found[key].append(models[key].model_validate(item))
            except ValidationError as exc:
                problems.extend(
                    f"{path.name}: {label}: {line}"
                    for e in exc.errors()
                    for line in _describe(e, item).splitlines()
                )
    return found


def _known_hosts(path: Path, problems: list[str]) -> dict[str, str]:
    """Map each name or `[address]:port` in a known_hosts file to its key."""
    keys: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        problems.append(f"estate.yaml: known_hosts: cannot read {path}: {exc.strerror}")
        return keys
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            key = _validate_key(" ".join(parts[1:3]))
        except ValueError as exc:
            problems.append(f"{path.name} line {number}: {exc}")
            continue
        for name in parts[0].split(","):
            keys[name] = key
    return keys


def _validate_key(value: str) -> str:
    try:
        return _KEY.validate_python(value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None


def _pin_keys(
    estate_dir: Path, settings: EstateSettings, hosts: list[Host], problems: list[str]
) -> list[Host]:
    known: dict[str, str] = {}
    if settings.known_hosts:
        known = _known_hosts(estate_dir / settings.known_hosts, problems)
    pinned = []
    for host in hosts:
        key = host.host_key
        if key is None:
            for name in (host.name, f"[{host.address}]:{host.port}", host.address):
                key = key or known.get(name)
        if key is None:
            problems.append(
                f"hosts.yaml: {host.name}: host_key: no pinned host key "
                "(set host_key or list the host in the estate's known_hosts)"
            )
        pinned.append(host.model_copy(update={"host_key": key}))
    return pinned


def _duplicates(file: str, kind: str, names: list[str], problems: list[str]) -> None:
    for name, count in Counter(names).items():
        if count > 1:
            problems.append(f"{file}: {kind} {name!r} is defined {count} times")


def _cross_check(sections: dict[str, list[Any]], problems: list[str]) -> None:
    hosts: list[Host] = sections["hosts"]
    services: list[Service] = sections["services"]
    people: list[Person] = sections["people"]
    teams: list[Team] = sections["teams"]
    _duplicates("hosts.yaml", "host", [h.name for h in hosts], problems)
    _duplicates("services.yaml", "service", [s.name for s in services], problems)
    _duplicates("people.yaml", "person", [p.name for p in people], problems)
    _duplicates("people.yaml", "team", [t.name for t in teams], problems)
    _duplicates("rules.yaml", "rule", [r.name for r in sections["rules"]], problems)
    tokens = [p.token_sha256 for p in people if p.token_sha256]
    if len(tokens) != len(set(tokens)):
        problems.append("people.yaml: two people share one token_sha256")
    for (address, port), count in Counter((h.address, h.port) for h in hosts).items():
        if count > 1:
            problems.append(f"hosts.yaml: {count} hosts share address {address} port {port}")
    host_names = {h.name for h in hosts}
    groups = {g for h in hosts for g in h.groups}
    team_names = {t.name for t in teams}
    for service in services:
        for host in service.hosts:
            if host not in host_names:
                problems.append(f"services.yaml: {service.name}: hosts: no host named {host!r}")
        if service.group and service.group not in groups:
            problems.append(
                f"services.yaml: {service.name}: group: no host is in group {service.group!r}"
            )
        if teams and service.owner_team and service.owner_team not in team_names:
            problems.append(
                f"services.yaml: {service.name}: owner_team: no team {service.owner_team!r}"
            )
    for person in people:
        if person.team and person.team not in team_names:
            problems.append(f"people.yaml: {person.name}: team: no team {person.team!r}")
    person_names = {p.name for p in people}
    for team in teams:
        if team.on_call and team.on_call not in person_names:
            problems.append(f"people.yaml: team {team.name}: on_call: no person {team.on_call!r}")
    _duplicates("catalog.yaml", "item", [c.name for c in sections["catalog"]], problems)
    _duplicates(
        "entitlements.yaml", "entitlement", [e.name for e in sections["entitlements"]], problems
    )
    audiences: list[tuple[str, Audience]] = []
    for item in sections["catalog"]:
        audiences += [
            (f"catalog.yaml: {item.name}: requesters", item.requesters),
            (f"catalog.yaml: {item.name}: approval.approvers", item.approval.approvers),
        ]
        if item.approval.policy == "one" and not (
            item.approval.approvers.roles
            or item.approval.approvers.teams
            or item.approval.approvers.people
        ):
            problems.append(f"catalog.yaml: {item.name}: approval: policy one names no approvers")
    for entitlement in sections["entitlements"]:
        audiences += [
            (f"entitlements.yaml: {entitlement.name}: requesters", entitlement.requesters),
            (f"entitlements.yaml: {entitlement.name}: approvers", entitlement.approvers),
        ]
        if entitlement.group not in groups:
            problems.append(
                f"entitlements.yaml: {entitlement.name}: group: no host is in group "
                f"{entitlement.group!r}"
            )
    for where, audience in audiences:
        problems.extend(
            f"{where}: teams: no team {t!r}" for t in audience.teams if t not in team_names
        )
        problems.extend(
            f"{where}: people: no person {p!r}" for p in audience.people if p not in person_names
        )
    _check_runbooks(sections, problems)
    for window in sections["maintenance"]:
        for host in window.hosts:
            if host not in host_names:
                problems.append(f"maintenance.yaml: {window.name}: hosts: no host named {host!r}")
        if window.group and window.group not in groups:
            problems.append(
                f"maintenance.yaml: {window.name}: group: no host is in group {window.group!r}"
            )


def _check_runbooks(sections: dict[str, list[Any]], problems: list[str]) -> None:
    """Declared runbooks have names of their own; a catalog item that names one gives it a
    host, a service and exactly the parameters it takes."""
    declared: list[DeclaredRunbook] = sections["runbooks"]
    _duplicates("runbooks.yaml", "runbook", [r.name for r in declared], problems)
    for own in declared:
        if own.name in SHIPPED_RUNBOOKS:
            problems.append(
                f"runbooks.yaml: {own.name}: name: opsflow ships a runbook of that name"
            )
    by_name = {r.name: r for r in declared}
    for item in sections["catalog"]:
        name = item.fulfillment.runbook
        if name is None:
            continue
        where = f"catalog.yaml: {item.name}: fulfillment.runbook"
        runbook = by_name.get(name)
        if runbook is None:
            problems.append(f"{where}: no runbook {name!r} in runbooks.yaml")
            continue
        given = {i.name for i in item.inputs} | set(item.fulfillment.parameters)
        for target in ("host", "service"):
            if target not in given:
                problems.append(f"{where}: the item gives no {target!r} input or parameter")
        takes = {p.name for p in runbook.parameters}
        for extra in sorted(given - takes - {"host", "service"}):
            problems.append(f"{where}: {name} takes no parameter {extra!r}")
        for parameter in runbook.parameters:
            if parameter.default is None and parameter.name not in given:
                problems.append(
                    f"{where}: {name}'s parameter {parameter.name!r} has no default and the "
                    "item gives no input of that name"
                )


def load_estate(estate_dir: Path | str) -> Estate:
    """Load and validate the estate in `estate_dir`; raise `InventoryError` listing all problems."""
    estate_dir = Path(estate_dir)
    if not estate_dir.is_dir():
        raise InventoryError([f"{estate_dir}: no such estate directory"])
    problems: list[str] = []
    for path in sorted(estate_dir.glob("*.y*ml")):
        if path.name not in ESTATE_FILES:
            problems.append(
                f"{path.name}: not an estate file "
                f"(expected one of {', '.join(sorted(ESTATE_FILES))})"
            )
    if not (estate_dir / "hosts.yaml").is_file():
        raise InventoryError([*problems, f"{estate_dir}: hosts.yaml is missing"])

    settings = EstateSettings()
    settings_path = estate_dir / "estate.yaml"
    if settings_path.is_file():
        raw = _read_yaml(settings_path, problems) or {}
        try:
            settings = EstateSettings.model_validate(raw)
        except ValidationError as exc:
            problems.extend(f"estate.yaml: {_describe(e)}" for e in exc.errors())

    sections: dict[str, list[Any]] = {}
    for name in SECTIONS:
        path = estate_dir / name
        data = _read_yaml(path, problems) if path.is_file() else None
        sections.update(_sections(path, data, problems))
    _cross_check(sections, problems)
    sections["hosts"] = _pin_keys(estate_dir, settings, sections["hosts"], problems)
    if problems:
        raise InventoryError(problems)
    return Estate(settings=settings, **sections)


EstateStamp = tuple[tuple[str, int, int], ...]
"""Path, mtime and size of each file an estate is read from: the size catches an edit within
the clock's tick."""


def estate_stamp(estate_dir: Path, estate: Estate | None = None) -> EstateStamp:
    """The stamp of the estate's files as they are now: those in `estate_dir` and, when
    `estate` names one, its known_hosts file (which may lie outside the directory). Equal
    stamps mean the files load to the same estate; a stamp costs a few stats, loading ~20 ms.
    """
    paths: list[Path] = []
    with suppress(OSError):  # gone or unreadable: load_estate names the problem
        paths = list(Path(estate_dir).iterdir())
    if estate is not None and estate.settings.known_hosts:
        paths.append(Path(estate_dir) / estate.settings.known_hosts)
    found = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))
