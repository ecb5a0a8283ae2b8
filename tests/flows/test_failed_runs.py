"""A flow run of an ITIL process that fails pages the on-call, through Prefect's own machinery.

`page-on-failed-run` is applied from `prefect.yaml` to the real Prefect server (its trigger
becomes an automation there), a flow tagged `itil:` fails, the server's trigger creates a
run of the deployment for it (and none for a failing run of no ITIL process), and that run's
flow pages the lab's on-call with the run's name and reason.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect import flow, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

from opsflow.errors import PermanentError
from opsflow.flows.failed_runs import page_on_failed_run
from opsflow.runtime.project import find_deployment, read_deployments, to_runner_deployment
from tests.support.waiting import wait_for


@flow(name="itil-test-failure")
def fail_on_purpose(reason: str) -> None:
    raise RuntimeError(reason)


@pytest.fixture(scope="module")
def paging_deployment(prefect_server: None):
    """page-on-failed-run applied as `opsflow up` serves it; removed with its automation."""
    deployment_id = to_runner_deployment(find_deployment("page-on-failed-run")).apply()
    yield deployment_id
    with get_client(sync_client=True) as client:
        client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
        client.delete_deployment(deployment_id)


def page_runs(deployment_id: UUID) -> dict[str, str]:
    """The runs the trigger made of the deployment: the failed run each pages about -> id."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return {run.parameters["flow_run"]: str(run.id) for run in runs}


def test_the_server_keeps_the_trigger_as_an_automation_that_runs_the_deployment(
    paging_deployment: UUID,
) -> None:
    with get_client(sync_client=True) as client:
        automations = client.read_resource_related_automations(
            f"prefect.deployment.{paging_deployment}"
        )
    [automation] = automations
    assert automation.name == "page-on-failed-itil-run" and automation.enabled
    trigger = automation.trigger
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert trigger.match_related.root == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.itil:*",
    }
    [action] = automation.actions
    assert action.type == "run-deployment" and action.deployment_id == paging_deployment
    assert action.parameters == {"flow_run": "{{ event.resource.id }}"}


def test_a_failed_itil_run_pages_the_on_call_and_a_failed_other_run_does_not(
    paging_deployment: UUID, lab, pager
) -> None:
    reason = f"disk on fire {uuid4().hex[:8]}"
    other = fail_on_purpose(reason="not an ITIL process", return_state=True)
    with tags("itil:test"):
        failed = fail_on_purpose(reason=reason, return_state=True)
    assert failed.is_failed() and other.is_failed()
    failed_id, other_id = failed.state_details.flow_run_id, other.state_details.flow_run_id

    wanted = f"prefect.flow-run.{failed_id}"
    runs = wait_for(
        lambda: (found := page_runs(paging_deployment)).get(wanted) and found,
        60,
        "the trigger to make a run of page-on-failed-run for the failed ITIL run",
    )
    assert f"prefect.flow-run.{other_id}" not in runs

    paged = page_on_failed_run(flow_run=wanted)  # the run the trigger made, run here
    assert paged == "alice"  # the lab's ops team's on-call
    page = wait_for(
        lambda: next((p for p in pager.pages if reason in str(p["body"])), None),
        30,
        "the page about the failed run",
    )
    assert "itil-test-failure" in page["body"]["body"] and "test" in page["body"]["subject"]
    assert "Failed" in page["body"]["subject"]


def test_a_flow_run_reference_that_is_not_one_is_refused_plainly(prefect_server: None) -> None:
    with pytest.raises(PermanentError, match=r"flow_run: .* is not a flow run id"):
        page_on_failed_run(flow_run="prefect.flow-run.$(reboot)")
    with pytest.raises(PermanentError, match="no flow run"):
        page_on_failed_run(flow_run=str(uuid4()))


def test_deployments_scheduled_hourly_or_more_often_run_one_at_a_time() -> None:
    frequent = []
    for spec in read_deployments():
        deployment = to_runner_deployment(spec)
        if not any(_at_least_hourly(s.schedule) for s in deployment.schedules):
            continue
        frequent.append(spec.name)
        assert deployment.concurrency_limit == 1, spec.name
        strategy = deployment.concurrency_options.collision_strategy
        assert strategy == ConcurrencyLimitStrategy.CANCEL_NEW, spec.name
    assert {"health-check", "expire-access", "gather-facts", "problem-review"} <= set(frequent)


def _at_least_hourly(schedule: Any) -> bool:
    """Whether a cron schedule fires at least once an hour (its minute field names a minute
    or a step, and its hour field every hour)."""
    minute, hour, *_ = schedule.cron.split()
    return hour == "*" and (minute == "*" or minute.startswith("*/") or minute.isdigit())
