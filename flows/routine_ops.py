"""IT Operations Management's routine jobs: health checks and fact gathering across the estate."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from inventory.models import Estate, Host, Service
from tasks.facts import HostFacts, read_host_facts
from tasks.fanout import map_hosts, raise_failures
from tasks.inventory import read_estate
from tasks.services import HealthResult, check_service_health


def _service_hosts(estate: Estate) -> list[tuple[Service, Host]]:
    return [(s, h) for s in estate.services for h in estate.hosts_of(s)]


@flow(name="health-check", log_prints=False)
def health_check(estate_dir: str | None = None) -> list[HealthResult]:
    """Check every service on every host it runs on; publish a table and list the failures."""
    logger = get_run_logger()
    estate = read_estate(estate_dir)
    results: list[HealthResult] = []
    for service in estate.services:
        outcomes = map_hosts(
            check_service_health,
            estate.hosts_of(service),
            limit=estate.settings.ssh_concurrency,
            service=service,
        )
        raise_failures(f"health check of {service.name}", outcomes)
        results += [o.result for o in outcomes]
    failing = [r for r in results if not r.healthy]
    create_table_artifact(
        key="health-check",
        table=[r.model_dump() for r in results],
        description=(
            f"**{len(results) - len(failing)} of {len(results)} healthy.**"
            + "".join(f"\n- {r.service} on {r.host}: {r.detail}" for r in failing)
        ),
    )
    for result in failing:
        logger.warning("UNHEALTHY %s on %s: %s", result.service, result.host, result.detail)
    logger.info("%d of %d service instances healthy", len(results) - len(failing), len(results))
    return results


@flow(name="gather-facts")
def gather_facts(estate_dir: str | None = None) -> list[HostFacts]:
    """Read OS, kernel, uptime, load, memory and disks from every host; publish them as a table."""
    estate = read_estate(estate_dir)
    outcomes = map_hosts(read_host_facts, estate.hosts, limit=estate.settings.ssh_concurrency)
    facts = [o.result for o in outcomes if o.ok]
    create_table_artifact(
        key="host-facts",
        table=[
            {
                "host": f.host,
                "os": f.os,
                "kernel": f.kernel,
                "uptime_h": round(f.uptime_s / 3600, 1),
                "load_1m": f.load[0],
                "mem_used_percent": round(100 * (1 - f.mem_available_kb / f.mem_total_kb), 1)
                if f.mem_total_kb
                else None,
                "fullest_disk": max(f.disks, key=lambda d: d.used_percent).mount
                if f.disks
                else None,
                "fullest_disk_percent": max((d.used_percent for d in f.disks), default=None),
            }
            for f in facts
        ]
        + [{"host": o.host.name, "os": f"unreachable: {o.error}"} for o in outcomes if not o.ok],
        description=f"Facts from {len(facts)} of {len(outcomes)} hosts.",
    )
    raise_failures("fact gathering", outcomes)
    return facts


if __name__ == "__main__":
    health_check()
