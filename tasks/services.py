"""Check and control the estate's services on their hosts."""

from __future__ import annotations

import time

import requests
from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from opsflow.errors import OpsError, PermanentError
from opsflow.inventory.models import CommandCheck, Host, HttpCheck, Service
from opsflow.tasks.ssh import execute


class HealthResult(BaseModel):
    """Whether one service answered its health check on one host."""

    host: str
    service: str
    healthy: bool
    detail: str
    latency_ms: float


@task(
    cache_policy=NONE,
    timeout_seconds=120,
    task_run_name="check_service_health[{service.name}@{host.name}]",
)
def check_service_health(host: Host, service: Service) -> HealthResult:
    """Run the service's health check against one host; a failure is a result, not an error."""
    check = service.health_check
    started = time.monotonic()
    if isinstance(check, HttpCheck):
        healthy, detail = _probe_http(host, check)
    else:
        healthy, detail = _probe_command(host, check)
    return HealthResult(
        host=host.name,
        service=service.name,
        healthy=healthy,
        detail=detail,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
    )


def _probe_http(host: Host, check: HttpCheck) -> tuple[bool, str]:
    address = f"[{host.address}]" if ":" in host.address else host.address
    url = f"http://{address}:{check.port}{check.path}"
    try:
        response = requests.get(url, timeout=check.timeout_s, allow_redirects=False)
    except requests.Timeout:
        return False, f"GET {url}: no answer within {check.timeout_s:g}s"
    except requests.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else "connection failed"
        return False, f"GET {url}: {reason}"
    if response.status_code != check.expect_status:
        return False, f"GET {url}: status {response.status_code}, expected {check.expect_status}"
    return True, f"GET {url}: {response.status_code}"


def _probe_command(host: Host, check: CommandCheck) -> tuple[bool, str]:
    try:
        result = execute(host, check.argv, timeout_s=check.timeout_s, check=False)
    except OpsError as exc:
        return False, str(exc)
    tail = (result.stdout or result.stderr).strip().splitlines()[-1:] or [""]
    return result.ok, f"exit {result.exit_status}: {tail[0][:200]}"


class NotRestoredError(PermanentError):
    """The service did not answer its health check before the verification deadline."""


@task(
    cache_policy=NONE,
    timeout_seconds=600,
    task_run_name="verify_restored[{service.name}@{host.name}]",
)
def verify_restored(host: Host, service: Service, deadline_s: float = 20.0) -> HealthResult:
    """Poll the health check until it passes; raise `NotRestoredError` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check_service_health.fn(host, service)
        if result.healthy:
            return result
        if time.monotonic() > deadline:
            raise NotRestoredError(
                f"{service.name} on {host.name} still unhealthy after {deadline_s:g}s: "
                f"{result.detail}"
            )
        time.sleep(0.25)
