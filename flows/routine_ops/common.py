"""What several routine jobs share.

Choosing the services and hosts a run acts on, a table row for each host that failed, and
reporting findings to the desk as events.
"""

from __future__ import annotations

from typing import Any

from prefect.logging import get_run_logger

from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import Estate, Host, Service
from opsflow.tasks.desk_intake import DeskEvent, clearing_events, read_open_incidents, send_events
from opsflow.tasks.fanout import HostOutcome

# --- selection ---------------------------------------------------------------------------


def services(estate: Estate, names: list[str] | None) -> list[Service]:
    """The named services (all when `names` is None); unknown names are an error."""
    if names is None:
        return list(estate.services)
    try:
        return [estate.service(n) for n in names]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None


def hosts_of(estate: Estate, service: Service, only: list[str] | None) -> list[Host]:
    """The service's hosts, limited to `only` when given."""
    hosts = estate.hosts_of(service)
    return hosts if only is None else [h for h in hosts if h.name in only]


def hosts(estate: Estate, only: list[str] | None) -> list[Host]:
    """The estate's hosts, limited to `only` when given; unknown names are an error."""
    if only is None:
        return list(estate.hosts)
    try:
        return [estate.host(n) for n in only]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None


def failure_rows(outcomes: list[HostOutcome[Any]], **extra: Any) -> list[dict[str, Any]]:
    return [
        {"host": o.host.name, **extra, "error": str(o.error)[:300]} for o in outcomes if not o.ok
    ]


# --- findings ----------------------------------------------------------------------------


def report_findings(
    firing: list[DeskEvent],
    cleared: list[DeskEvent],
    symptoms: list[str],
    desk_url: str | None,
    token_block: str,
) -> tuple[int, int]:
    """Send firing findings to the desk, then all-clears for those an open incident waits for.

    A firing finding that cannot be delivered fails the run; an all-clear that cannot is
    only logged, as the incident's own restoration or a person closes it anyway. Returns
    how many new events the desk stored and how many all-clears were delivered.
    """
    stored = 0
    if firing:
        stored = send_events(firing, desk_url=desk_url, token_block=token_block).stored
    if not cleared:
        return stored, 0
    # A warning alone (a certificate with weeks left) does not hold an incident open.
    critical = [e for e in firing if e.severity == "critical"]
    resolved = clearing_events(read_open_incidents(symptoms), cleared, still_firing=critical)
    if not resolved:
        return stored, 0
    try:
        send_events(resolved, desk_url=desk_url, token_block=token_block)
    except OpsError as exc:
        get_run_logger().warning("%d all-clears not delivered: %s", len(resolved), exc)
        return stored, 0
    return stored, len(resolved)
