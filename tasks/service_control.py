"""Read and change whether a service runs on a host, through its inventory control commands."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger
from pydantic import BaseModel

from opsflow.errors import CommandFailedError, PermanentError
from opsflow.inventory.models import Host, Service, ServiceControl
from opsflow.tasks.change import Change
from opsflow.tasks.retry import RETRY_TRANSIENT
from opsflow.tasks.ssh import execute

STATUS_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 90.0

ServiceState = Literal["running", "stopped", "missing", "unknown", "unchecked"]


def state_from_status(exit_status: int) -> ServiceState:
    """The LSB meaning of a status command's exit status (126/127: the command is not there)."""
    if exit_status == 0:
        return "running"
    if exit_status in (1, 2, 3):
        return "stopped"
    if exit_status in (126, 127):
        return "missing"
    return "unknown"


def control_of(service: Service) -> ServiceControl:
    """The service's control commands; PermanentError when the inventory has none."""
    if service.control is None:
        raise PermanentError(f"service {service.name} has no control commands in the inventory")
    return service.control


def service_state(host: Host, service: Service) -> ServiceState:
    """Ask the service's status command on the host what state it is in."""
    if service.control is None:
        return "unchecked"
    result = execute(host, service.control.status, timeout_s=STATUS_TIMEOUT_S, check=False)
    return state_from_status(result.exit_status)


class ServiceStates(BaseModel):
    """The state of each service the inventory places on one host."""

    host: str
    states: dict[str, ServiceState]


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=180,
    task_run_name="read_service_states[{host.name}]",
)
def read_service_states(host: Host, services: list[Service]) -> ServiceStates:
    """Run every given service's status command on the host (reads only, so safe to retry)."""
    return ServiceStates(host=host.name, states={s.name: service_state(host, s) for s in services})


def _done(verb: str, output: str) -> str:
    """What a control command did, with the end of what it said."""
    said = output.strip()[-300:]
    return f"{verb}: {said}" if said else verb


@task(
    cache_policy=NONE,
    timeout_seconds=180,
    task_run_name="stop_service[{service.name}@{host.name}]",
)
def stop_service(host: Host, service: Service) -> Change:
    """Stop the service unless its status says it is already stopped.

    Not retried: a stop half-done is not ours to repeat blindly.
    """
    commands = control_of(service)
    target = f"service {service.name}"
    before = service_state(host, service)
    if before != "running":
        change = Change.unchanged(host.name, "stop_service", target, f"status says {before}")
    else:
        result = execute(host, commands.stop, timeout_s=CONTROL_TIMEOUT_S)
        said = _done("stopped", result.stdout or result.stderr)
        change = Change.made(host.name, "stop_service", target, said)
    get_run_logger().info("%s: %s", host.name, change.detail)
    return change


@task(
    cache_policy=NONE,
    timeout_seconds=180,
    task_run_name="start_service[{service.name}@{host.name}]",
)
def start_service(host: Host, service: Service) -> Change:
    """Start the service unless its status says it already runs.

    Not retried: a failed start is reported, not repeated.
    """
    commands = control_of(service)
    target = f"service {service.name}"
    if service_state(host, service) == "running":
        change = Change.unchanged(host.name, "start_service", target, "status says running")
    else:
        try:
            result = execute(host, commands.start, timeout_s=CONTROL_TIMEOUT_S)
        except CommandFailedError:
            get_run_logger().exception("%s: %s did not start", host.name, service.name)
            raise
        said = _done("started", result.stdout or result.stderr)
        change = Change.made(host.name, "start_service", target, said)
    get_run_logger().info("%s: %s", host.name, change.detail)
    return change
