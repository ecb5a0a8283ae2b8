"""An Ansible inventory (YAML or INI) as opsflow hosts: what `opsflow inventory import ansible`
converts, so a team brings the estate it already describes instead of typing it again.

Pure: text in, validated `Host` models (or one `InventoryError` naming every problem) out.
The inventory may come from anywhere, so it is read as hostile input: size, hosts, groups,
nesting and entries visited (YAML aliases repeat a subtree without growing the file) are
bounded, YAML goes through `safe_load` only, and every value through the inventory's types.

What is read, as Ansible reads it: groups with their `hosts`, `vars` and nested `children`
(a host is in a group's ancestors too), host ranges (`web[01:20]`), `host:port`, the
variables `ansible_host`, `ansible_port` and `ansible_user` (and their old `ansible_ssh_*`
spellings) from host vars over group vars, deeper groups over shallower, then by
`ansible_group_priority` and name. The host key is looked up in a known_hosts file for the
address and port ssh will use; a host without one is refused.

One module, about 500 lines, on purpose: one format, read as Ansible reads it. The YAML and
INI readers fill the same private structures (`_Reader`, `_Group`) under the same bounds, and
resolving groups, depths and variables into hosts reads them back; split, those internals
would have to become an interface nobody else uses.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import TypeAdapter, ValidationError

from opsflow.errors import InventoryError
from opsflow.inventory.known_hosts import KeyNotPinnedError, KnownHosts
from opsflow.inventory.models import Host
from opsflow.inventory.types import Name

MAX_INVENTORY_BYTES = 4 * 1024 * 1024
MAX_HOSTS = 10_000
MAX_GROUPS = 10_000
MAX_DEPTH = 32
"""Deepest nesting of `children` below `all`."""
MAX_ENTRIES = 100_000
"""Group and host entries visited while reading, each repeat of a YAML alias counted."""

ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
USER_VARS = ("ansible_user", "ansible_ssh_user")
SSH_CONNECTIONS = ("ssh", "paramiko", "smart")
"""`ansible_connection` values that reach the host over SSH, as opsflow does."""
IMPLICIT_GROUPS = ("all", "ungrouped")

Form = Literal["yaml", "ini"]

_GROUP_NAME = TypeAdapter(Name)
_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
_RANGE = re.compile(r"\[([0-9a-zA-Z]*):([0-9a-zA-Z]+)(?::(\d+))?\]")
_BRACKETED_HOST_PORT = re.compile(r"^\[([^\[\]]+)\]:(\d+)$")


def _shown(value: object) -> str:
    """A value as it may be quoted in an error: repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Group:
    vars: dict[str, Any] = field(default_factory=dict)
    children: dict[str, None] = field(default_factory=dict)
    hosts: dict[str, None] = field(default_factory=dict)


class _Reader:
    """Builds the groups and host vars of one inventory, collecting problems as it goes."""

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.entries = 0

    def visit(self) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise InventoryError(
                [f"more than {MAX_ENTRIES} group and host entries (YAML aliases repeating a part?)"]
            )

    def group(self, name: str, parent: str | None) -> _Group:
        if name not in self.groups:
            if len(self.groups) >= MAX_GROUPS + len(IMPLICIT_GROUPS):
                raise InventoryError([f"more than {MAX_GROUPS} groups"])
            self.groups[name] = _Group()
        if parent is not None and name != "all":
            self.groups[parent].children[name] = None
        return self.groups[name]

    def hosts(self, where: str, pattern: object, variables: dict[str, Any], group: str) -> None:
        """Add the hosts a pattern names (`web[1:3]`, `db:2222`) to `group` with `variables`."""
        self.visit()
        if not isinstance(pattern, str):
            self.problems.append(f"{where}: host {_shown(pattern)}: a host's name is text")
            return
        try:
            names = list(_expand(pattern))
        except ValueError as exc:
            self.problems.append(f"{where}: host {_shown(pattern)}: {exc}")
            return
        for _ in names[1:]:  # a range repeated by aliases costs what it names
            self.visit()
        for name, port in names:
            if name not in self.host_vars and len(self.host_vars) >= MAX_HOSTS:
                raise InventoryError([f"more than {MAX_HOSTS} hosts"])
            known = self.host_vars.setdefault(name, {})
            if port is not None:
                known["ansible_port"] = port
            known.update(variables)
            self.groups[group].hosts[name] = None


def _split_port(pattern: str) -> tuple[str, str | None]:
    """`[address]:port` or `name:port` as (name, port); anything else (IPv6) is all name."""
    bracketed = _BRACKETED_HOST_PORT.match(pattern)
    if bracketed:
        return bracketed.group(1), bracketed.group(2)
    outside = re.sub(r"\[[^\]]*\]", "", pattern)
    if outside.count(":") == 1:
        name, _, port = pattern.rpartition(":")
        if port.isdigit():
            return name, port
    return pattern, None


def _expand(pattern: str) -> Iterator[tuple[str, str | None]]:
    """Every host a pattern names, with the port it gives, as Ansible expands host ranges."""
    name, port = _split_port(pattern)
    names = [name]
    while any(_RANGE.search(n) for n in names):
        expanded = []
        for item in names:
            match = _RANGE.search(item)
            if match is None:
                expanded.append(item)
                continue
            head, tail = item[: match.start()], item[match.end() :]
            for part in _range(*match.groups()):
                expanded.append(head + part + tail)
                if len(expanded) > MAX_HOSTS:
                    raise ValueError(f"the range names more than {MAX_HOSTS} hosts")
        names = expanded
    for item in names:
        yield item, port


def _range(begin: str, end: str, step: str | None) -> list[str]:
    stride = int(step or 1)
    if stride < 1:
        raise ValueError("a range's step is at least 1")
    if begin.isalpha() and end.isalpha() and len(begin) == len(end) == 1:
        letters = string.ascii_letters
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise ValueError(f"range [{begin}:{end}] runs backwards")
        return list(letters[first : last + 1 : stride])
    begin = begin or "0"
    if not (begin.isdigit() and end.isdigit()):
        raise ValueError(f"range [{begin}:{end}] is neither numbers nor single letters")
    if int(end) - int(begin) > MAX_HOSTS * stride:
        raise ValueError(f"the range names more than {MAX_HOSTS} hosts")
    if int(begin) > int(end):
        raise ValueError(f"range [{begin}:{end}] runs backwards")
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    if width and len(end) != width:
        raise ValueError(f"range [{begin}:{end}]: a zero-padded range needs ends of one width")
    return [str(i).zfill(width) for i in range(int(begin), int(end) + 1, stride)]


def _mapping(where: str, value: object, problems: list[str]) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
        return {}
    return value


def _variables(where: str, value: object, problems: list[str]) -> dict[str, Any]:
    variables = _mapping(where, value, problems)
    bad = [k for k in variables if not isinstance(k, str)]
    if bad:
        problems.append(f"{where}: variable {_shown(bad[0])}: a variable's name is text")
    return {k: v for k, v in variables.items() if isinstance(k, str)}


def _read_yaml(text: str) -> _Reader:
    reader = _Reader()
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InventoryError([f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    except RecursionError:
        raise InventoryError(["nested too deeply to be an inventory"]) from None
    if data is None:
        return reader
    if not isinstance(data, dict):
        raise InventoryError(["expected a mapping of group names (all:, webservers:, ...)"])

    def read_group(name: object, body: object, parent: str | None, path: tuple[str, ...]) -> None:
        reader.visit()
        where = "group " + " > ".join((*path, str(name)))
        if not isinstance(name, str):
            reader.problems.append(f"{where}: a group's name is text, not {type(name).__name__}")
            return
        if name in path:
            reader.problems.append(f"{where}: a group cannot be its own child")
            return
        if len(path) > MAX_DEPTH:
            reader.problems.append(f"{where}: children nested more than {MAX_DEPTH} deep")
            return
        group = reader.group(name, parent)
        body = _mapping(where, body, reader.problems)
        for key in body:
            if key not in ("hosts", "vars", "children"):
                reader.problems.append(
                    f"{where}: unknown key {_shown(key)} (a group has hosts, vars, children)"
                )
        group.vars.update(_variables(f"{where}: vars", body.get("vars"), reader.problems))
        for pattern, host_vars in _mapping(
            f"{where}: hosts", body.get("hosts"), reader.problems
        ).items():
            variables = _variables(f"{where}: host {_shown(pattern)}", host_vars, reader.problems)
            reader.hosts(where, pattern, variables, name)
        for child, child_body in _mapping(
            f"{where}: children", body.get("children"), reader.problems
        ).items():
            read_group(child, child_body, name, (*path, name))

    for name, body in data.items():
        read_group(name, body, None if name == "all" else "all", ())
    return reader


def _ini_value(value: str) -> str:
    """A value of an INI `key=value` line, its matching quotes taken off."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _read_ini(text: str) -> _Reader:
    reader = _Reader()
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"line {number}"
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = _SECTION.match(line)
            if section is None or (section.group(2) or "hosts") not in (
                "hosts",
                "vars",
                "children",
            ):
                reader.problems.append(
                    f"{where}: {_shown(line)} is not [group], [group:vars] or [group:children]"
                )
                group, kind = "", "skip"
                continue
            group, kind = section.group(1), section.group(2) or "hosts"
            reader.group(group, None if group == "all" else "all")
            continue
        if kind == "skip":
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                reader.problems.append(f"{where}: expected key=value in [{group}:vars]")
                continue
            reader.groups[group].vars[key.strip()] = _ini_value(value)
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            reader.problems.append(f"{where}: {exc}")
            continue
        if not tokens:
            continue
        if kind == "children":
            reader.visit()
            reader.group(tokens[0], group)
            continue
        variables: dict[str, Any] = {}
        for token in tokens[1:]:
            key, sep, value = token.partition("=")
            if not sep or not key:
                reader.problems.append(
                    f"{where}: expected key=value after the host, got {_shown(token)}"
                )
                continue
            variables[key] = value
        reader.hosts(where, tokens[0], variables, group)
    return reader


def _depths(reader: _Reader) -> dict[str, int]:
    """Each group's depth below `all` (its longest path), reporting cycles of children."""
    depths: dict[str, int] = {}
    on_path: set[str] = set()

    def walk(name: str, depth: int) -> None:
        reader.visit()
        if name in on_path:
            reader.problems.append(f"group {name}: a group cannot be its own descendant")
            return
        if depth > MAX_DEPTH:
            reader.problems.append(f"group {name}: children nested more than {MAX_DEPTH} deep")
            return
        if depths.get(name, -1) >= depth:
            return
        depths[name] = depth
        on_path.add(name)
        for child in reader.groups[name].children:
            walk(child, depth + 1)
        on_path.discard(name)

    walk("all", 0)
    for name in reader.groups:  # groups only reached through a cycle
        depths.setdefault(name, 1)
    return depths


def _memberships(reader: _Reader) -> dict[str, set[str]]:
    """Each host's groups: those that list it and every group above them. The groups form no
    cycle and nest at most `MAX_DEPTH` deep (checked before), so this recursion is bounded."""
    parents: dict[str, set[str]] = {name: set() for name in reader.groups}
    for name, group in reader.groups.items():
        for child in group.children:
            parents[child].add(name)
    above: dict[str, frozenset[str]] = {}

    def ancestors(name: str) -> frozenset[str]:
        if name not in above:
            found = {name}
            for parent in parents[name]:
                found |= ancestors(parent)
            above[name] = frozenset(found)
        return above[name]

    member: dict[str, set[str]] = {host: {"all"} for host in reader.host_vars}
    for name, group in reader.groups.items():
        for host in group.hosts:
            member[host] |= ancestors(name)
    return member


def _variable(variables: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any] | None:
    """The first of `names` present, as Ansible 2.19's ssh plugin reads them (older ones took
    the last: `ansible_ssh_user` over `ansible_user`)."""
    for name in names:
        if name in variables:
            return name, variables[name]
    return None


def _host(
    name: str,
    variables: dict[str, Any],
    groups: list[str],
    known_hosts: KnownHosts,
    credentials: str | None,
    problems: list[str],
) -> Host | None:
    """One host as opsflow's model, or None with its problems added."""
    where = f"host {name}"
    count = len(problems)
    sources: dict[str, str] = {}
    entry: dict[str, Any] = {"name": name, "address": name, "port": 22, "user": "root"}
    for field_name, names in (("address", ADDRESS_VARS), ("port", PORT_VARS), ("user", USER_VARS)):
        found = _variable(variables, names)
        if found is None:
            continue
        variable, value = found
        sources[field_name] = f" (from {variable} {_shown(value)})"
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            problems.append(
                f"{where}: {field_name}{sources[field_name]}: a template; opsflow does not "
                "evaluate Jinja, give the value itself"
            )
        elif isinstance(value, bool) or (field_name == "port" and isinstance(value, float)):
            problems.append(f"{where}: {field_name}{sources[field_name]}: not a port number")
        else:
            entry[field_name] = value
    connection = variables.get("ansible_connection", "ssh")
    if connection not in SSH_CONNECTIONS:
        problems.append(
            f"{where}: ansible_connection {_shown(connection)}: opsflow reaches hosts over SSH "
            f"only ({', '.join(SSH_CONNECTIONS)})"
        )
    if credentials is not None:
        entry["credentials"] = credentials
    entry["groups"] = groups
    if len(problems) > count:
        return None
    try:
        host = Host.model_validate(entry)
    except ValidationError as exc:
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else "(host)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "string_pattern_mismatch":
                message = f"{_shown(error['input'])}: {message}"
            problems.append(f"{where}: {field_name}{sources.get(field_name, '')}: {message}")
        return None
    try:
        key = known_hosts.key_for(host.address, host.port)
    except KeyNotPinnedError as exc:
        problems.append(f"{where}: host_key: {exc}")
        return None
    return Host.model_validate({**entry, "host_key": key})


def hosts_from_ansible(
    text: str, form: Form, known_hosts: KnownHosts, credentials: str | None = None
) -> list[Host]:
    """The hosts of an Ansible inventory, each with its groups and pinned key.

    Args:
        text: the inventory file's text.
        form: `yaml` (the YAML inventory plugin's format; JSON is YAML too) or `ini`.
        known_hosts: where each host's key is looked up, by the address and port ssh uses.
        credentials: the SSH credentials block every host logs in with (else opsflow's
            default).

    Raises:
        InventoryError: naming every problem (group, host, field and why); no host is
            returned when any is refused, so nothing is half imported.
    """
    if len(text.encode()) > MAX_INVENTORY_BYTES:
        raise InventoryError([f"larger than {MAX_INVENTORY_BYTES // (1024 * 1024)} MiB"])
    reader = _read_yaml(text) if form == "yaml" else _read_ini(text)
    problems = reader.problems
    depths = _depths(reader)
    if problems:  # the inventory's own shape first: its hosts are read once it holds together
        raise InventoryError(list(dict.fromkeys(problems)))
    valid_groups = set()
    for name in reader.groups:
        if name in IMPLICIT_GROUPS:
            continue
        try:
            valid_groups.add(_GROUP_NAME.validate_python(name))
        except ValidationError:
            problems.append(
                f"group {name}: not an opsflow name: lower-case letters, digits, '-', '_' and '.', "
                "starting alphanumeric, at most 63"
            )
    hosts = []
    for name, member_of in _memberships(reader).items():
        ordered = sorted(
            member_of,
            key=lambda g: (depths[g], _priority(reader.groups[g].vars), g),
        )
        variables: dict[str, Any] = {}
        for group in ordered:
            variables.update(reader.groups[group].vars)
        variables.update(reader.host_vars[name])
        groups = sorted(g for g in member_of if g in valid_groups)
        host = _host(name, variables, groups, known_hosts, credentials, problems)
        if host is not None:
            hosts.append(host)
    seen: dict[tuple[str, int], str] = {}
    for host in hosts:
        other = seen.setdefault((host.address, host.port), host.name)
        if other != host.name:
            problems.append(
                f"host {host.name}: address {host.address} port {host.port} is host {other}'s too"
            )
    if not reader.host_vars:
        problems.append("the inventory names no hosts")
    if problems:
        raise InventoryError(list(dict.fromkeys(problems)))
    return hosts


def _priority(variables: dict[str, Any]) -> int:
    value = variables.get("ansible_group_priority", 1)
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 1


def render_hosts(hosts: list[Host]) -> str:
    """The text of opsflow's hosts.yaml for `hosts`: the fields the import set, no others."""
    entries = [host.model_dump(mode="json", exclude_unset=True) for host in hosts]
    header = (
        "# Written by `opsflow inventory import ansible`; check with `opsflow inventory check`.\n"
    )
    return header + yaml.safe_dump({"hosts": entries}, sort_keys=False, width=1000)
