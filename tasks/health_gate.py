"""The health gate a service passes on a host before a rollout goes on: its health check,
passed a number of times in a row before a deadline. A restart says the service started;
only the gate says it serves.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from opsflow.errors import PermanentError
from opsflow.inventory.models import Host, Service
from opsflow.tasks.run_logging import run_logger
from opsflow.tasks.services import HealthResult, check_service_health


class HealthGateError(PermanentError):
    """The service did not pass its health check often enough in a row before the deadline."""


class GateResult(BaseModel):
    """A health gate passed: how many checks it took and how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    service: str
    passes: int
    checks: int
    elapsed_s: float
    detail: str


@task(
    cache_policy=NONE,
    timeout_seconds=900,
    task_run_name="wait_for_health_gate[{service.name}@{host.name}]",
)
def wait_for_health_gate(
    host: Host,
    service: Service,
    deadline_s: float = 30.0,
    passes: int = 3,
    interval_s: float = 0.5,
) -> GateResult:
    """Check the service's health until it passes `passes` times in a row: the gate a release
    passes before its rollout goes on.

    Raises `HealthGateError` when no such run of passes ends before `deadline_s`: no check
    starts after the deadline, so the gate ends within one check's own timeout of it.
    """
    if passes < 1 or deadline_s <= 0 or interval_s < 0:
        raise ValueError("passes must be >= 1, deadline_s > 0 and interval_s >= 0")
    started = time.monotonic()
    deadline = started + deadline_s
    in_a_row = checks = 0
    last: HealthResult | None = None
    while True:
        last = check_service_health.fn(host, service)
        checks += 1
        in_a_row = in_a_row + 1 if last.healthy else 0
        if in_a_row >= passes:
            run_logger(__name__).info(
                "%s: %s passed its health gate: %s", host.name, service.name, last.detail
            )
            return GateResult(
                host=host.name,
                service=service.name,
                passes=in_a_row,
                checks=checks,
                elapsed_s=round(time.monotonic() - started, 3),
                detail=last.detail,
            )
        if time.monotonic() + interval_s > deadline:
            raise HealthGateError(
                f"{host.name}: {service.name} did not pass its health check {passes} times in "
                f"a row within {deadline_s:g}s ({checks} checks, the last: {last.detail})"
            )
        time.sleep(interval_s)
