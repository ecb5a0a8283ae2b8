"""The deployments of `prefect.yaml`, read as data so `opsflow` can serve and run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron
from pydantic import BaseModel, ConfigDict, Field

PREFECT_YAML = (Path(__file__).resolve().parents[1] / "prefect.yaml").resolve()
"""Shipped inside the package (in a checkout, `opsflow/prefect.yaml` links to the top-level one)."""
PROJECT_DIR = PREFECT_YAML.parent
"""What prefect.yaml's entrypoints are relative to: the checkout, or the installed package."""


class CronSpec(BaseModel):
    """A cron schedule with its explicit time zone."""

    model_config = ConfigDict(extra="ignore")

    cron: str
    timezone: str


class DeploymentSpec(BaseModel):
    """One deployment as `prefect.yaml` declares it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    entrypoint: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[CronSpec] = Field(default_factory=list)
    concurrency_limit: ConcurrencyLimitConfig | None = Field(
        default=None, description="Runs of the deployment at once, and what a run beyond does."
    )
    triggers: list[DeploymentTriggerTypes] = Field(
        default_factory=list,
        description="Events that start a run (automations the server keeps with the deployment).",
    )

    def load_flow(self) -> Any:
        """Import the flow the entrypoint names (relative to the project directory)."""
        path, _, function = self.entrypoint.partition(":")
        return load_flow_from_entrypoint(f"{PROJECT_DIR / path}:{function}")

    @property
    def flow_name(self) -> str:
        """The flow's name as Prefect knows it, which is its function name with '-' for '_'."""
        return self.load_flow().name

    @property
    def full_name(self) -> str:
        """`flow-name/deployment-name`, as `run_deployment` wants it."""
        return f"{self.flow_name}/{self.name}"


def read_deployments(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """Every deployment declared in `prefect.yaml`."""
    document = yaml.safe_load(path.read_text()) or {}
    return [DeploymentSpec.model_validate(d) for d in document.get("deployments", [])]


def find_deployment(name: str, path: Path = PREFECT_YAML) -> DeploymentSpec:
    """The deployment called `name`; KeyError listing the known names otherwise."""
    specs = read_deployments(path)
    for spec in specs:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in specs)
    raise KeyError(f"no deployment {name!r} in prefect.yaml (known: {known})")


def to_runner_deployment(spec: DeploymentSpec) -> Any:
    """The deployment ready for `prefect.serve`, with its schedules, tags, concurrency and
    triggers (serving it creates their automations, replacing the deployment's old ones)."""
    return spec.load_flow().to_deployment(
        name=spec.name,
        description=spec.description,
        tags=spec.tags,
        parameters=spec.parameters,
        schedules=[Cron(s.cron, timezone=s.timezone) for s in spec.schedules],
        concurrency_limit=spec.concurrency_limit,
        triggers=spec.triggers or None,
    )
