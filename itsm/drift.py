"""Drift between the inventory and the facts: what the estate says versus what the hosts show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from opsflow.inventory.models import Estate
from opsflow.itsm.store.facts import FactsSnapshot

DriftKind = Literal[
    "host-unreachable", "host-not-gathered", "service-missing", "service-stopped", "version-differs"
]

SERVICE_DRIFT: dict[str, DriftKind] = {"missing": "service-missing", "stopped": "service-stopped"}
"""Service states that contradict the inventory placing the service on the host."""


class Drift(BaseModel):
    """One way a host differs from what the inventory says about it."""

    host: str
    kind: DriftKind
    service: str | None = None
    detail: str


def find_drift(estate: Estate, snapshots: Iterable[FactsSnapshot]) -> list[Drift]:
    """Compare the latest snapshot of every inventory host with what the inventory says.

    A host with no snapshot, or an unreachable one, is drift; so is a service the inventory
    places on a host whose status command says it is not installed (`missing`) or not
    running (`stopped`), and a service whose hosts have different releases in place
    (`version-differs`, once per host not on the release most of them run).
    """
    latest: dict[str, FactsSnapshot] = {}
    for taken in snapshots:
        known = latest.get(taken.host)
        if known is None or taken.gathered_at >= known.gathered_at:
            latest[taken.host] = taken
    drift: list[Drift] = []
    for host in estate.hosts:
        snapshot = latest.get(host.name)
        if snapshot is None:
            drift.append(Drift(host=host.name, kind="host-not-gathered", detail="no facts yet"))
            continue
        if not snapshot.reachable:
            drift.append(
                Drift(
                    host=host.name,
                    kind="host-unreachable",
                    detail=snapshot.error or "no answer",
                )
            )
            continue
        for service in estate.services:
            if host not in estate.hosts_of(service):
                continue
            state = snapshot.services.get(service.name, "unchecked")
            kind = SERVICE_DRIFT.get(state.split(" ", 1)[0])
            if kind is not None:
                drift.append(
                    Drift(
                        host=host.name,
                        kind=kind,
                        service=service.name,
                        detail=f"inventory places {service.name} here; status says {state}",
                    )
                )
    return drift + _version_drift(estate, latest)


def _version_drift(estate: Estate, latest: dict[str, FactsSnapshot]) -> list[Drift]:
    """Hosts of one service on another release than most of its hosts."""
    drift: list[Drift] = []
    for service in estate.services:
        found: dict[str, str] = {}
        for host in estate.hosts_of(service):
            snapshot = latest.get(host.name)
            releases = (snapshot.facts or {}).get("releases", {}) if snapshot else {}
            if service.name in releases:
                found[host.name] = releases[service.name] or "no release"
        if len(set(found.values())) < 2:
            continue
        common, _ = Counter(found.values()).most_common(1)[0]
        for host_name, version in sorted(found.items()):
            if version != common:
                drift.append(
                    Drift(
                        host=host_name,
                        kind="version-differs",
                        service=service.name,
                        detail=f"{service.name} {version} here; {common} on the others "
                        f"({', '.join(sorted(found))})",
                    )
                )
    return drift
