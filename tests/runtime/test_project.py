"""prefect.yaml: frequent jobs run one at a time, and the retention clean-up is scheduled."""

from __future__ import annotations

import pytest
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

from opsflow.runtime.project import find_deployment, to_runner_deployment


@pytest.mark.parametrize(
    "name", ["expire-access", "health-check", "prune-records", "mirror-maintenance-windows"]
)
def test_frequent_deployments_run_one_at_a_time(name: str) -> None:
    deployment = to_runner_deployment(find_deployment(name))
    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    assert deployment.schedules, f"{name} has no schedule"
