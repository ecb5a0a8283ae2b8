"""gather-facts: gather every host's facts, services' states and the release of each service in
place (`facts["releases"]`), kept as a history per host.

Technical Management's view of the estate: drift from the inventory is reported as a
markdown artifact and logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from opsflow.itsm.drift import Drift, find_drift
from opsflow.itsm.store.facts import FactsSnapshot
from opsflow.tasks.facts import HostFacts, read_host_facts
from opsflow.tasks.facts_history import record_facts_history
from opsflow.tasks.fanout import map_calls, map_hosts, raise_failures
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.records import current_flow_run_id
from opsflow.tasks.service_control import ServiceStates, read_service_states
from opsflow.tasks.versions import read_service_versions


def _facts_row(
    f: HostFacts, states: Mapping[str, str], versions: dict[str, str | None]
) -> dict[str, Any]:
    return {
        "host": f.host,
        "os": f.os,
        "kernel": f.kernel,
        "uptime_h": round(f.uptime_s / 3600, 1),
        "load_1m": f.load[0],
        "mem_used_percent": round(100 * (1 - f.mem_available_kb / f.mem_total_kb), 1)
        if f.mem_total_kb
        else None,
        "fullest_disk": max(f.disks, key=lambda d: d.used_percent).mount if f.disks else None,
        "fullest_disk_percent": max((d.used_percent for d in f.disks), default=None),
        "services": ", ".join(f"{n}: {s}" for n, s in sorted(states.items())),
        "releases": ", ".join(f"{n} {v or '-'}" for n, v in sorted(versions.items())),
    }


def drift_markdown(drift: list[Drift], hosts: int) -> str:
    """The drift report as a markdown table, or a line saying there is none."""
    if not drift:
        return f"**No drift:** all {hosts} hosts answered and run what the inventory says.\n"
    lines = [
        f"**{len(drift)} differences** between the inventory and the facts of {hosts} hosts.\n",
        "| host | drift | service | detail |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {d.host} | {d.kind} | {d.service or ''} | {d.detail.replace('|', '/')[:200]} |"
        for d in drift
    ]
    return "\n".join(lines) + "\n"


@flow(name="gather-facts")
def gather_facts(estate_dir: str | None = None, keep_days: float = 90.0) -> list[HostFacts]:
    """Gather every host's facts and services' states, keep them as history, report drift.

    Args:
        estate_dir: Estate directory; default the configured one.
        keep_days: Facts history older than this is pruned.
    """
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    limit = estate.settings.ssh_concurrency
    outcomes = map_hosts(read_host_facts, estate.hosts, limit=limit)
    placement = {
        h.name: [s for s in estate.services if h in estate.hosts_of(s)] for h in estate.hosts
    }
    reachable = [o.host for o in outcomes if o.ok]
    state_outcomes = map_calls(
        read_service_states, [(h, {"services": placement[h.name]}) for h in reachable], limit
    )
    states: dict[str, ServiceStates] = {
        o.host.name: o.result for o in state_outcomes if o.ok and o.result is not None
    }
    version_outcomes = map_calls(
        read_service_versions, [(h, {"services": placement[h.name]}) for h in reachable], limit
    )
    versions = {
        o.host.name: o.result.versions for o in version_outcomes if o.ok and o.result is not None
    }
    gathered_at = datetime.now(UTC)
    run_id = current_flow_run_id()
    snapshots = []
    for outcome in outcomes:
        name = outcome.host.name
        host_states = states.get(name)
        snapshots.append(
            FactsSnapshot(
                host=name,
                gathered_at=gathered_at,
                reachable=outcome.ok,
                facts=(
                    {**outcome.result.model_dump(), "releases": versions.get(name, {})}
                    if outcome.ok and outcome.result is not None
                    else None
                ),
                services=dict(host_states.states) if host_states else {},
                error=None if outcome.ok else str(outcome.error)[:2000],
                flow_run_id=run_id,
            )
        )
    written = record_facts_history(snapshots, keep_days)
    facts = [o.result for o in outcomes if o.ok and o.result is not None]
    create_table_artifact(
        key="host-facts",
        table=[
            _facts_row(
                f, states[f.host].states if f.host in states else {}, versions.get(f.host, {})
            )
            for f in facts
        ]
        + [{"host": o.host.name, "os": f"unreachable: {o.error}"} for o in outcomes if not o.ok],
        description=f"Facts from {len(facts)} of {len(outcomes)} hosts; "
        f"{written.recorded} snapshots kept as history ({written.pruned} old ones pruned).",
    )
    drift = find_drift(estate, snapshots)
    create_markdown_artifact(
        key="inventory-drift",
        markdown=drift_markdown(drift, len(estate.hosts)),
        description="Drift between the inventory and the facts gathered by this run.",
    )
    for item in drift:
        logger.warning("DRIFT %s %s %s: %s", item.host, item.kind, item.service or "", item.detail)
    raise_failures("fact gathering", outcomes)
    raise_failures("service states", state_outcomes)
    raise_failures("service versions", version_outcomes)
    return facts
