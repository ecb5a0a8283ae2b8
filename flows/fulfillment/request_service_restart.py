"""request-service-restart: a restart people ask for (stop and start a service on one of its
hosts, then verify its health). Not the `restart-service` runbook, which restores a service
found down."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from opsflow.flows.fulfillment import FulfillmentResult, service_on_host
from opsflow.inventory.models import Host, Service
from opsflow.tasks.change import Change
from opsflow.tasks.concurrency import host_slot
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.service_control import control_of, read_service_states
from opsflow.tasks.services import verify_restored
from opsflow.tasks.ssh import execute


@task(
    cache_policy=NONE,
    retries=0,  # a restart is not idempotent: a second one interrupts the service again
    timeout_seconds=180,
    task_run_name="restart_service_on_host[{service.name}@{host.name}]",
)
def restart_service_on_host(host: Host, service: Service) -> Change:
    """Restart the service with its restart command, else stop then start; report both statuses."""
    commands = control_of(service)
    before = execute(host, commands.status, check=False, timeout_s=30)
    if commands.restart is not None:
        execute(host, commands.restart, timeout_s=120)
    else:
        execute(host, commands.stop, timeout_s=60)
        execute(host, commands.start, timeout_s=60)
    after = execute(host, commands.status, check=False, timeout_s=30)
    return Change.made(
        host.name,
        "restart_service_on_host",
        f"service {service.name}",
        f"before: {before.stdout.strip() or before.exit_status}; "
        f"after: {after.stdout.strip() or after.exit_status}",
    )


@flow(name="request-service-restart", flow_run_name="restart-{service}-on-{host}")
def request_service_restart(
    service: str, host: str, dry_run: bool = False, verify_deadline_s: float = 20.0
) -> FulfillmentResult:
    """Restart a service on one of its hosts and wait for its health check to pass.

    Args:
        service: the service, as the estate names it.
        host: one of the service's hosts.
        dry_run: only report the service's status and what would be done.
        verify_deadline_s: how long the health check may take to pass after the restart.
    """
    logger = get_run_logger()
    estate = read_estate()
    target_service, target_host = service_on_host(estate, service, host)
    control_of(target_service)  # refuse a service without control commands before acting
    if dry_run:
        states = read_service_states(target_host, [target_service])
        state = states.states[target_service.name]
        planned = Change.planned(
            target_host.name, "restart_service_on_host", f"service {service}", f"restart {service}"
        )
        return FulfillmentResult(
            summary=f"dry run: would restart {service} on {host} (status says {state})",
            changed=False,
            dry_run=True,
            hosts=[planned],
        )
    with host_slot(target_host.name):
        change = restart_service_on_host(target_host, target_service)
        health = verify_restored(target_host, target_service, verify_deadline_s)
    logger.info("restarted %s on %s: %s", service, host, health.detail)
    return FulfillmentResult(
        summary=f"restarted {service} on {host} ({change.detail}); healthy: {health.detail}",
        changed=True,
        hosts=[change],
    )


if __name__ == "__main__":
    import sys

    request_service_restart(sys.argv[1], sys.argv[2])
