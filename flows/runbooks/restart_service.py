"""restart-service: the service is down; start it again.

A runbook, run by incident restoration; not the catalog's `request-service-restart`, which
restarts a running service because someone asked.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from opsflow.flows.runbooks import Diagnosis, Remediation, Runbook, keep_target, stop_target
from opsflow.inventory.models import Host, Service
from opsflow.tasks.logs import read_log_tail
from opsflow.tasks.service_control import control_of
from opsflow.tasks.ssh import execute


@task(cache_policy=NONE, timeout_seconds=120, task_run_name="diagnose[{service.name}@{host.name}]")
def diagnose(host: Host, service: Service) -> Diagnosis:
    """Ask the service's status command and read the log's end."""
    status = execute(host, control_of(service).status, check=False, timeout_s=30)
    state = "running" if status.ok else f"not running (status exit {status.exit_status})"
    return Diagnosis(
        summary=f"{service.name} on {host.name}: {state}",
        facts={
            "status": (status.stdout + status.stderr).strip()[-500:],
            "log_tail": read_log_tail(host, service),
        },
    )


@task(cache_policy=NONE, timeout_seconds=120, task_run_name="start[{service.name}@{host.name}]")
def remediate(host: Host, service: Service) -> Remediation:
    """Start the service unless its status says it already runs."""
    commands = control_of(service)
    keep_target(host, service)
    target = f"service {service.name}"
    if execute(host, commands.status, check=False, timeout_s=30).ok:
        nothing = "status says running: nothing started"
        return Remediation.unchanged(host.name, "start", target, nothing, actions=[nothing])
    started = execute(host, commands.start, check=False, timeout_s=60)
    return Remediation.ran(host, "start", target, [started])


remediate.on_rollback(stop_target)


RUNBOOK = Runbook(
    name="restart-service",
    description="Start a stopped service and wait for its health check.",
    diagnose=diagnose,
    remediate=remediate,
)
