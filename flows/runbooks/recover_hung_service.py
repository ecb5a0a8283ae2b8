"""recover-hung-service: the process is alive but its health check fails; stop it hard, start it."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from opsflow.flows.runbooks import Diagnosis, Remediation, Runbook, keep_target, stop_target
from opsflow.inventory.models import Host, Service
from opsflow.tasks.logs import read_log_tail
from opsflow.tasks.service_control import control_of
from opsflow.tasks.services import check_service_health
from opsflow.tasks.ssh import execute


@task(cache_policy=NONE, timeout_seconds=120, task_run_name="diagnose[{service.name}@{host.name}]")
def diagnose(host: Host, service: Service) -> Diagnosis:
    """Compare what the process table says with what the health check says."""
    status = execute(host, control_of(service).status, check=False, timeout_s=30)
    health = check_service_health.fn(host, service)
    return Diagnosis(
        summary=(
            f"{service.name} on {host.name}: status exit {status.exit_status}, "
            f"health {'ok' if health.healthy else 'failing'} ({health.detail})"
        ),
        facts={"status": status.stdout.strip()[-500:], "log_tail": read_log_tail(host, service)},
    )


@task(cache_policy=NONE, timeout_seconds=180, task_run_name="recover[{service.name}@{host.name}]")
def remediate(host: Host, service: Service) -> Remediation:
    """Stop the service hard (its stop command kills what does not exit), then start it."""
    commands = control_of(service)
    keep_target(host, service)
    target = f"service {service.name}"
    if check_service_health.fn(host, service).healthy:
        nothing = "health check passes: nothing to recover"
        return Remediation.unchanged(host.name, "recover", target, nothing, actions=[nothing])
    stopped = execute(host, commands.stop, check=False, timeout_s=60)
    started = execute(host, commands.start, check=False, timeout_s=60)
    return Remediation.ran(host, "recover", target, [stopped, started])


remediate.on_rollback(stop_target)


RUNBOOK = Runbook(
    name="recover-hung-service",
    description="Kill a hung service process, start it, and verify its health.",
    diagnose=diagnose,
    remediate=remediate,
)
