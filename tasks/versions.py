"""Which release of each service a host has in place: versions as facts, for gather-facts."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, Field

from opsflow.inventory.models import Host, Service
from opsflow.tasks.releases import ReleaseMissingError, read_release
from opsflow.tasks.retry import RETRY_TRANSIENT


class ServiceVersions(BaseModel):
    """The release `current` names for each service on one host that keeps releases."""

    host: str
    versions: dict[str, str | None] = Field(
        description="Service -> the version in place; None when `current` names no release. "
        "Services without a release directory are left out."
    )


@task(
    cache_policy=NONE,
    **RETRY_TRANSIENT,
    timeout_seconds=180,
    task_run_name="read_service_versions[{host.name}]",
)
def read_service_versions(host: Host, services: list[Service]) -> ServiceVersions:
    """Read which release of each given service is in place on the host (reads only)."""
    versions: dict[str, str | None] = {}
    for service in services:
        try:
            versions[service.name] = read_release.fn(host, service).current
        except ReleaseMissingError:
            continue  # the service keeps no releases here: no version to report
    return ServiceVersions(host=host.name, versions=versions)
