"""recover-hung-service: the process is alive but its health check fails; stop it hard, start it."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from prefect.transactions import Transaction, get_transaction

from opsflow.flows.runbooks import Diagnosis, Remediation, Runbook, record_rollback
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
    transaction = get_transaction()
    assert transaction is not None, "a remediation runs in its restoration's transaction"
    transaction.set("target", (host, service))
    target = f"service {service.name}"
    if check_service_health.fn(host, service).healthy:
        nothing = "health check passes: nothing to recover"
        return Remediation.unchanged(host.name, "recover", target, nothing, actions=[nothing])
    stopped = execute(host, commands.stop, check=False, timeout_s=60)
    started = execute(host, commands.start, check=False, timeout_s=60)
    actions = [
        f"ran {stopped.command}: exit {stopped.exit_status}",
        f"ran {started.command}: exit {started.exit_status}",
    ]
    return Remediation.made(
        host.name,
        "recover",
        target,
        "; ".join(actions),
        actions=actions,
        ok=stopped.ok and started.ok,
        output=(started.stderr or started.stdout).strip()[-500:],
    )


@remediate.on_rollback
def stop_after_failed_recovery(transaction: Transaction) -> None:
    """Verification failed: stop the service so no hung half-started process is left behind."""
    host, service = transaction.get("target")
    result = execute(host, control_of(service).stop, check=False, timeout_s=60)
    record_rollback(transaction, f"stopped {service.name} on {host.name}: {result.command}")


RUNBOOK = Runbook(
    name="recover-hung-service",
    description="Kill a hung service process, start it, and verify its health.",
    diagnose=diagnose,
    remediate=remediate,
)
