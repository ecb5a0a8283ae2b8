"""What several routine jobs share.

Choosing the services and hosts a run acts on, running a step on a service's hosts, the
job's table with a row for each host that failed, and reporting findings to the desk as
events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect import Task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import Estate, Host, Service
from opsflow.tasks.desk_intake import DeskEvent, clearing_events, read_open_incidents, send_events
from opsflow.tasks.fanout import HostOutcome, map_hosts

_Named = TypeVar("_Named")

# --- selection ---------------------------------------------------------------------------


def _named(
    every: Sequence[_Named], lookup: Callable[[str], _Named], names: list[str] | None
) -> list[_Named]:
    """The named items (all when `names` is None); an unknown name is a PermanentError."""
    if names is None:
        return list(every)
    try:
        return [lookup(n) for n in names]
    except KeyError as exc:
        raise PermanentError(str(exc)) from None


def services(estate: Estate, names: list[str] | None) -> list[Service]:
    """The named services (all when `names` is None); unknown names are an error."""
    return _named(estate.services, estate.service, names)


def hosts_of(estate: Estate, service: Service, only: list[str] | None) -> list[Host]:
    """The service's hosts, limited to `only` when given."""
    hosts = estate.hosts_of(service)
    return hosts if only is None else [h for h in hosts if h.name in only]


def hosts(estate: Estate, only: list[str] | None) -> list[Host]:
    """The estate's hosts, limited to `only` when given; unknown names are an error."""
    return _named(estate.hosts, estate.host, only)


# --- running and reporting ---------------------------------------------------------------


def map_service_hosts(
    step: Task[..., Any], estate: Estate, service: Service, only: list[str] | None, **params: Any
) -> tuple[list[Any], list[HostOutcome[Any]]]:
    """Run `step(host=…, service=service, **params)` on the service's hosts (limited to
    `only`), as many at once as the estate allows: the results of the hosts it succeeded on,
    and the outcomes of those it failed on."""
    outcomes = map_hosts(
        step,
        hosts_of(estate, service, only),
        limit=estate.settings.ssh_concurrency,
        service=service,
        **params,
    )
    results = [o.result for o in outcomes if o.ok and o.result is not None]
    return results, [o for o in outcomes if not o.ok]


def publish_table(
    key: str, rows: list[dict[str, Any]], outcomes: list[HostOutcome[Any]], description: str
) -> None:
    """Publish the job's table artifact: `rows`, then a row for each host that failed."""
    failed = [{"host": o.host.name, "error": str(o.error)[:300]} for o in outcomes if not o.ok]
    create_table_artifact(key=key, table=rows + failed, description=description)


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
