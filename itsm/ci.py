"""Which configuration item (host, service) an event's labels name, by the estate's contract.

Triage applies it, where the estate is known, to every event that does not name its CI
itself (a generic event's `host` and `service` fields do; an alert has only labels). Most
Prometheus alerts carry `instance` (host:port) and `job` and nothing more: the host is then
the inventory host that instance points at, and an instance that points at no inventory host
names no host (the event is still stored and classified; an incident, if any, is about its
service alone). `silence_label_sets` is the same contract read backwards: the label
conditions under which an alert is about one of given hosts, for Alertmanager silences.
"""

from __future__ import annotations

import ipaddress
import threading
from urllib.parse import urlsplit

import regex

from opsflow.inventory.matchers import Matcher
from opsflow.inventory.models import Estate, Host, LabelContract

CI_LENGTH = 255
"""The records keep a host or service name of at most this many characters."""

_index_lock = threading.Lock()
_index: tuple[list[Host], dict[str, str]] | None = None
"""The last estate's hosts and their lookup table (name or canonical address -> name)."""


def ci_of(labels: dict[str, str], estate: Estate) -> tuple[str | None, str | None]:
    """The host and service the labels name under the estate's label contract.

    A host label's value is the host (an inventory host's name, or its address); a value
    longer than the records keep (`CI_LENGTH`) names none, rather than a truncated one.
    """
    contract = estate.settings.labels
    host = None
    value = _first(labels, contract.host)
    if value is not None:
        host = host_named(value, estate) or value
    else:
        instance = _first(labels, contract.instance)
        host = host_of_instance(instance, estate) if instance is not None else None
    service = _first(labels, contract.service)
    return _recordable(host), _recordable(service)


def _first(labels: dict[str, str], names: list[str]) -> str | None:
    """The value of the first of `names` present and not blank in `labels`."""
    for name in names:
        value = labels.get(name, "").strip()
        if value:
            return value
    return None


def _recordable(name: str | None) -> str | None:
    return name if name is not None and len(name) <= CI_LENGTH else None


def host_part(instance: str) -> str:
    """The host part of an instance: `host:port`, `[v6]:port`, `[v6]`, a bare host or IPv6
    address, or a URL such as the blackbox exporter's `https://host:8443/health`."""
    part = instance.strip()
    if "://" in part:
        try:
            return urlsplit(part).hostname or ""
        except ValueError:
            return ""
    if part.startswith("["):
        return part[1 : part.find("]")] if "]" in part else ""
    if part.count(":") == 1:
        return part.split(":", 1)[0]
    return part


def host_of_instance(instance: str, estate: Estate) -> str | None:
    """The inventory host an instance points at by its name or address, else None."""
    return host_named(host_part(instance), estate)


def host_named(value: str, estate: Estate) -> str | None:
    """The name of the inventory host called `value` or reached at the address `value`."""
    if not value:
        return None
    return _lookup(estate).get(_canonical(value))


def _canonical(value: str) -> str:
    """An address as one spelling (`::0001` is `::1`), a DNS name in lower case."""
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value.lower().rstrip(".")


def _lookup(estate: Estate) -> dict[str, str]:
    """Name or canonical address -> host name, built once per estate (thousands of events a
    second each look a host up)."""
    global _index
    index = _index
    if index is not None and index[0] is estate.hosts:
        return index[1]
    table: dict[str, str] = {}
    for host in estate.hosts:
        table.setdefault(_canonical(host.address), host.name)
    for host in estate.hosts:
        table[host.name] = host.name  # a name wins over another host's DNS address
    with _index_lock:
        _index = (estate.hosts, table)
    return table


def silence_label_sets(hosts: list[Host], contract: LabelContract) -> list[list[Matcher]]:
    """The conditions, one list per silence, under which an alert is about one of `hosts`.

    One silence per label the contract reads a host from, in its order: an alert is about
    one of the hosts when the first host label it carries names one of them, or, carrying
    none, when its first instance label points at one (by name or address, any port).
    """
    if not hosts:
        return []
    names = sorted({h.name for h in hosts})
    spots = sorted({h.name for h in hosts} | {_instance_host(h.address) for h in hosts})
    instance = f"(?:{'|'.join(regex.escape(s) for s in spots)})(?::[0-9]+)?"
    sets: list[list[Matcher]] = []
    absent: list[Matcher] = []
    for label in contract.host:
        sets.append(
            [*absent, Matcher(name=label, op="=~", value="|".join(map(regex.escape, names)))]
        )
        absent.append(Matcher(name=label, op="=", value=""))
    for label in contract.instance:
        sets.append([*absent, Matcher(name=label, op="=~", value=instance)])
        absent.append(Matcher(name=label, op="=", value=""))
    return sets


def _instance_host(address: str) -> str:
    """How an address appears in an instance label: IPv6 in brackets."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address
