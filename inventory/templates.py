"""Placeholders in declared runbooks (`{host.address}`, `{params.marker}`), always values.

A placeholder is replaced inside one argument of an argument vector, one component of a URL
(percent-encoded) or one JSON string, so whatever a value holds (`;`, `$(…)`, quotes, `/`)
it never becomes shell syntax, another URL or another JSON field. `{{` and `}}` are literal
braces. The URL's scheme and authority are fixed or come from the inventory: a request's
input can never send a step's credentials to another server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlsplit

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PARAMETER = re.compile(r"^params\.([a-z_][a-z0-9_]{0,62})$")

CI_PLACEHOLDERS = {
    "host": "the host's inventory name",
    "host.name": "the host's inventory name",
    "host.address": "the host's address (IPv6 in brackets inside a URL's authority)",
    "service": "the service's name",
    "service.name": "the service's name",
    "service.log_dir": "the service's log directory",
    "service.port": "the port of the service's HTTP health check",
    "reference": "the incident or request the runbook runs for (INC0000001, REQ0000001)",
}
"""What a runbook may name besides its own parameters (`{params.NAME}`)."""

AUTHORITY_PLACEHOLDERS = frozenset({"host.address", "host.name", "service.port"})
"""The only placeholders allowed in a URL's host and port: values from the inventory."""


def placeholders(template: str) -> list[str]:
    """The names a template refers to, in order; ValueError on a stray `{` or `}`."""
    names = []
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(f"a lone {token!r} in {template!r} (write {token * 2} for a brace)")
        names.append(match.group(1).strip())
    return names


def unknown_placeholder(name: str, parameters: set[str]) -> str | None:
    """Why `name` is not a placeholder a runbook with `parameters` may use, or None."""
    if name in CI_PLACEHOLDERS:
        return None
    match = _PARAMETER.match(name)
    if match is None:
        known = ", ".join("{" + p + "}" for p in CI_PLACEHOLDERS)
        return f"unknown placeholder {{{name}}} (known: {known}, {{params.NAME}})"
    if match.group(1) not in parameters:
        declared = ", ".join(sorted(parameters)) or "none"
        return f"{{{name}}} names no parameter of the runbook (its parameters: {declared})"
    return None


def render(template: str, values: Mapping[str, str], escape: Callable[[str], str] = str) -> str:
    """The template with each placeholder replaced by `escape(value)`.

    Raises:
        KeyError: a placeholder whose value is not known here (its name is the argument).
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = (match.group(1) or "").strip()
        if name not in values:
            raise KeyError(name)
        return escape(values[name])

    return _TOKEN.sub(replace, template)


def _split_url(template: str) -> tuple[str, str, str]:
    """Scheme, authority and the rest (path, query) of a URL template."""
    scheme, sep, rest = template.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return scheme, rest[:cut], rest[cut:]


def check_url_template(template: str) -> str:
    """Refuse a URL template that is not http(s), names a user, or takes its host or port
    from anything but the inventory; return it unchanged."""
    _, authority, rest = _split_url(template)
    if not authority:
        raise ValueError("names no host")
    if "@" in authority:
        raise ValueError("must not carry a user or password: credentials come from a block")
    if "#" in rest:
        raise ValueError("must not have a fragment")
    for name in placeholders(authority):
        if name not in AUTHORITY_PLACEHOLDERS:
            allowed = ", ".join("{" + p + "}" for p in sorted(AUTHORITY_PLACEHOLDERS))
            raise ValueError(f"{{{name}}} in the host or port: only {allowed} may be there")
    placeholders(rest)
    sample = render_url(template, {name: "1" for name in placeholders(template)})
    try:
        urlsplit(sample).port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    return template


def render_url(template: str, values: Mapping[str, str]) -> str:
    """The URL, with inventory values in its authority as they are (an IPv6 address in
    brackets) and every value in its path and query percent-encoded as one component."""
    scheme, authority, rest = _split_url(template)

    def host_part(value: str) -> str:
        return f"[{value}]" if ":" in value else value

    return (
        f"{scheme}://{render(authority, values, host_part)}"
        f"{render(rest, values, lambda v: quote(v, safe=''))}"
    )
