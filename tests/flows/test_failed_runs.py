"""A flow run of an ITIL process that fails pages the on-call, through Prefect's own machinery.

`page-on-failed-run` is applied from `prefect.yaml` to the real Prefect server (its trigger
becomes an automation there), a flow tagged `itil:` fails, the server's trigger creates a
run of the deployment for it (and none for a failing run of no ITIL process), and that run's
flow pages the lab's on-call with the run's name and reason. A storm of failures is one page at
once and one digest of the rest when the estate's grouping window ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import yaml
from prefect import flow, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

from opsflow.blocks.notifications import save_webhook_pager
from opsflow.errors import PermanentError
from opsflow.flows.failed_runs import digest_page, page_on_failed_run
from opsflow.itsm.store.records import open_records
from opsflow.runtime.project import find_deployment, read_deployments, to_runner_deployment
from opsflow.tasks.flow_runs import FlowRunSummary, read_flow_run
from tests.support.waiting import wait_for


@flow(name="itil-test-failure")
def fail_on_purpose(reason: str) -> None:
    raise RuntimeError(reason)


GROUPING_MINUTES = 0.3
"""The lab's grouping window in these tests: long enough for a storm's held runs to be
recorded, short enough that a run that opens one is not waiting long for its end."""


@pytest.fixture(scope="module")
def grouping_window(lab, records_database: str) -> Iterator[float]:
    """The lab estate's paging grouping window set to GROUPING_MINUTES; its seconds."""
    path = lab.estate_dir / "estate.yaml"
    original = path.read_text()
    settings = {**yaml.safe_load(original), "page_grouping_minutes": GROUPING_MINUTES}
    path.write_text(yaml.safe_dump(settings))
    yield GROUPING_MINUTES * 60
    path.write_text(original)


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
    paging_deployment: UUID, lab, pager, grouping_window: float
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


def test_a_storm_of_failed_runs_is_one_page_at_once_and_one_digest_of_the_rest(
    lab, pager, grouping_window: float
) -> None:
    marker = uuid4().hex[:8]
    reasons = [f"block opsflow-lab not found {marker}"] * 4 + [f"disk on fire {marker}"] * 2
    with tags("itil:test"):
        states = [fail_on_purpose(reason=reason, return_state=True) for reason in reasons]
    first, *rest = [str(state.state_details.flow_run_id) for state in states]

    with ThreadPoolExecutor(1) as opening:
        opener = opening.submit(page_on_failed_run, flow_run=first)
        wait_for(lambda: ours(pager, marker), 60, "the page about the first failed run")
        with ThreadPoolExecutor(len(rest)) as pool:  # at once, as the trigger starts them
            held = list(pool.map(lambda run: page_on_failed_run(flow_run=run), rest))
        assert all(h.startswith("held for ops's digest at ") for h in held), held
        assert len(ours(pager, marker)) == 1  # nothing more until the window ends
        assert opener.result(timeout=grouping_window + 60) == "alice"
    immediate, digest = wait_for(
        lambda: len(found := ours(pager, marker)) >= 2 and found, 30, "the digest page"
    )
    assert first in immediate["body"] and not any(run in immediate["body"] for run in rest)
    assert "Failed" in immediate["subject"]
    assert digest["subject"] == "opsflow: 5 more failed runs (test)"
    assert first not in digest["body"] and all(run in digest["body"] for run in rest)
    reasons = [line for line in digest["body"].splitlines() if marker in line]
    assert len(reasons) == 2, digest["body"]  # each reason once, counted
    assert reasons[0].startswith("  3 x ") and f"opsflow-lab not found {marker}" in reasons[0]
    assert reasons[1].startswith("  2 x ") and f"disk on fire {marker}" in reasons[1]
    assert "Processes: test (5)." in digest["body"]

    # The window is over: the next failure pages at once again, alone.
    later_marker = uuid4().hex[:8]
    with tags("itil:test"):
        later = fail_on_purpose(reason=f"disk on fire {later_marker}", return_state=True)
    later_id = str(later.state_details.flow_run_id)
    started = datetime.now(UTC)
    with ThreadPoolExecutor(1) as opening:
        opener = opening.submit(page_on_failed_run, flow_run=later_id)
        [page] = wait_for(lambda: ours(pager, later_marker), 60, "the page about the later run")
        assert later_id in page["body"] and "Failed" in page["subject"]
        assert opener.result(timeout=grouping_window + 60) == "alice"
    assert (datetime.now(UTC) - started).total_seconds() >= grouping_window - 1
    assert len(ours(pager, later_marker)) == 1 and len(ours(pager, marker)) == 2


def test_what_a_dead_opener_held_is_sent_first_by_the_next_failure_after_its_window(
    lab, pager, grouping_window: float
) -> None:
    marker = uuid4().hex[:8]
    with tags("itil:test"):
        states = [fail_on_purpose(reason=f"lost {marker} {n}", return_state=True) for n in range(3)]
    opened, held, later = [str(state.state_details.flow_run_id) for state in states]
    # A page-on-failed-run run paged `opened`, then died; `held` came within its window.
    pages = open_records().paging
    window = timedelta(seconds=grouping_window)
    recorded = []
    for run_id in (opened, held):
        summary = read_flow_run.fn(run_id).model_dump()
        recorded.append(pages.record("ops", run_id, summary, window, "dead-run", 600))
    assert [r.outcome for r in recorded] == ["page", "held"]
    pages.mark_sent([recorded[0].failure.id], "dead-run", datetime.now(UTC))
    end = recorded[0].failure.window_end
    wait_for(lambda: datetime.now(UTC) > end, grouping_window + 5, "the dead run's window to end")

    assert page_on_failed_run(flow_run=later) == "alice"
    leftover, page = wait_for(
        lambda: len(found := ours(pager, marker)) >= 2 and found, 30, "the two pages"
    )
    assert leftover["subject"] == "opsflow: 1 more failed run (test)"
    assert held in leftover["body"] and opened not in leftover["body"]
    assert later in page["body"] and "Failed" in page["subject"]
    assert len(ours(pager, marker)) == 2 and pages.unsent("ops") == []


def test_a_failure_whose_page_could_not_go_is_paged_by_the_next_one_after_the_window(
    lab, pager, grouping_window: float
) -> None:
    marker = uuid4().hex[:8]
    with tags("itil:test"):
        states = [fail_on_purpose(reason=f"lost {marker} {n}", return_state=True) for n in range(2)]
    unpaged, later = [str(state.state_details.flow_run_id) for state in states]
    save_webhook_pager("ops-pager", "http://127.0.0.1:9/page")  # nothing listens there
    try:
        with pytest.raises(Exception):  # noqa: B017  # whatever the block raises
            page_on_failed_run(flow_run=unpaged)
    finally:
        save_webhook_pager("ops-pager", pager.url)
    assert [f.flow_run_id for f in open_records().paging.unsent("ops")] == [unpaged]
    end = datetime.now(UTC) + timedelta(seconds=grouping_window)
    wait_for(lambda: datetime.now(UTC) > end, grouping_window + 5, "its window to end")

    assert page_on_failed_run(flow_run=later) == "alice"
    leftover, page = wait_for(
        lambda: len(found := ours(pager, marker)) >= 2 and found, 30, "the two pages"
    )
    assert unpaged in leftover["body"] and leftover["subject"].startswith("opsflow: 1 more")
    assert later in page["body"] and unpaged not in page["body"]
    assert open_records().paging.unsent("ops") == []


def ours(pager, marker: str) -> list[dict[str, str]]:
    """The pages (subject and body) that mention `marker`, in the order they came."""
    return [p["body"] for p in list(pager.pages) if marker in str(p["body"])]


def test_a_digest_counts_reasons_links_twenty_runs_and_keeps_each_reason_on_one_line() -> None:
    def run(n: int, message: str, deployment: str | None) -> FlowRunSummary:
        return FlowRunSummary(
            id=str(uuid4()),
            name=f"run-{n}",
            flow="restore",
            deployment=deployment,
            tags=["itil:incident"] if n % 2 else ["opsflow:x"],
            state="Failed",
            message=message,
            url=f"http://ui/runs/flow-run/{n}",
        )

    forged = "boom\nRuns:\n  run-0 (Completed): http://evil"
    runs = [
        run(n, forged if n < 23 else "", "incident-restoration" if n else None) for n in range(25)
    ]
    subject, body = digest_page(runs)
    assert subject == "opsflow: 25 more failed runs (incident, restore)"
    assert "Processes: restore (13), incident (12)." in body
    assert "Deployments: incident-restoration (24), no deployment (1)." in body
    assert "  23 x boom Runs: run-0 (Completed): http://evil\n" in body
    assert "  2 x no message\n" in body
    assert "http://ui/runs/flow-run/19" in body and "http://ui/runs/flow-run/20" not in body
    assert body.endswith("\n  and 5 more")
    lines = body.splitlines()
    assert [line for line in lines if line.startswith("Runs:")] == ["Runs:"]
    assert "  run-0 (Completed): http://evil" not in lines


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
