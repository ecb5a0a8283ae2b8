"""A fan-out is one task run: every host finishes, is retried on its own, and is tabled."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

import pytest
from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.runtime import flow_run

from opsflow.errors import CommandFailedError, SSHTransientError
from opsflow.inventory.models import Host
from opsflow.tasks.fanout import FanOutError, map_calls, map_hosts, raise_failures
from opsflow.tasks.retry import is_transient
from opsflow.tasks.ssh import CommandResult, execute, run_command
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ssh_credentials")

FIRST_TRY = 75
"""Exit status of `fails_once` the first time it runs on a host."""


@task(cache_policy=NONE, retries=2, retry_delay_seconds=0.05, retry_condition_fn=is_transient)
def fails_once(host: Host, marker: str) -> CommandResult:
    """Fails transiently the first time on a host (leaving `marker` there), then succeeds."""
    script = 'test -e "$1" || { touch "$1"; exit 75; }; echo "$1"'
    result = execute(host, ["sh", "-c", script, "sh", marker], check=False)
    if result.exit_status == FIRST_TRY:
        raise SSHTransientError(host.name, "first try on this host")
    return result


def one_fan_out(fn, *args, **kwargs):
    """Run `fn` in a flow of its own; return its outcomes and the flow run's id."""

    @flow
    def fan_out_flow():
        return fn(*args, **kwargs), flow_run.get_id()

    outcomes, run_id = fan_out_flow()
    return outcomes, UUID(run_id)


def task_run_names(run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return sorted(r.name for r in runs if r.state is not None and r.state.is_final())


def artifact_rows(run_id: UUID) -> list[dict]:
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def error_logs(run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs if log.level >= 40]


def test_one_dead_host_does_not_hide_the_others(estate) -> None:
    dead = estate.hosts[1].model_copy(update={"name": "dead", "port": 1})
    hosts = [estate.hosts[0], dead, *estate.hosts[2:]]
    quick = run_command.with_options(retry_delay_seconds=0)

    outcomes, run_id = one_fan_out(map_hosts, quick, hosts, limit=2, argv=["hostname"])

    assert [o.host.name for o in outcomes] == [h.name for h in hosts]
    assert [o.result.stdout.strip() for o in outcomes if o.ok] == [
        h.name for h in hosts if h.name != "dead"
    ]
    # Connection refused is transient: the dead host alone was tried again, to the limit.
    assert {o.host.name: o.attempts for o in outcomes} == {
        h.name: 4 if h.name == "dead" else 1 for h in hosts
    }
    with pytest.raises(FanOutError) as caught:
        raise_failures("hostname", outcomes)
    assert f"1 of {len(hosts)} hosts failed" in str(caught.value)
    assert "dead: " in str(caught.value) and "connection refused" in str(caught.value)

    # In the UI: one task run for the whole fan-out, a table row per host, the failure logged.
    names = wait_for(lambda: task_run_names(run_id), 30, "the fan-out's task run")
    assert names == [f"run_command[{len(hosts)} hosts]"]
    rows = {row["host"]: row for row in artifact_rows(run_id)}
    assert list(rows) == [h.name for h in hosts]
    assert rows["dead"]["outcome"] == "failed" and rows["dead"]["attempts"] == 4
    assert "connection refused" in rows["dead"]["detail"]
    assert all(rows[h.name]["outcome"] == "ok" for h in hosts if h.name != "dead")
    logged = wait_for(
        lambda: [m for m in error_logs(run_id) if m.startswith("dead: run_command failed")],
        30,
        "the dead host's failure in the run's logs",
    )
    assert "connection refused" in logged[0]


def test_transient_failures_are_retried_on_their_host_only(estate) -> None:
    marker = f"/root/fan-out-{uuid4().hex}"  # /root is each host's own
    first, *others = estate.hosts
    execute(first, ["touch", marker])
    try:
        outcomes, _ = one_fan_out(map_hosts, fails_once, estate.hosts, limit=5, marker=marker)
        assert all(o.ok and o.result.stdout.strip() == marker for o in outcomes)
        # The host that had the marker succeeded at once; each other failed once, then passed.
        assert {o.host.name: o.attempts for o in outcomes} == {
            first.name: 1,
            **{h.name: 2 for h in others},
        }
    finally:
        for host in estate.hosts:
            execute(host, ["rm", "-f", marker])


def test_permanent_failures_are_not_retried(estate) -> None:
    calls = [
        (host, {"argv": ["sh", "-c", "exit 3" if i == 2 else "true"]})
        for i, host in enumerate(estate.hosts)
    ]
    outcomes, run_id = one_fan_out(map_calls, run_command, calls, limit=3)
    failed = [o for o in outcomes if not o.ok]
    assert [o.host.name for o in failed] == [estate.hosts[2].name]
    assert isinstance(failed[0].error, CommandFailedError) and failed[0].attempts == 1
    assert all(o.ok and o.attempts == 1 for o in outcomes if o is not failed[0])
    rows = artifact_rows(run_id)
    assert [r["outcome"] for r in rows].count("failed") == 1 and len(rows) == len(calls)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def test_at_most_limit_hosts_at_a_time(estate, tmp_path) -> None:
    hosts = estate.hosts[:4]
    # Each host stamps when its command starts and ends, by the one kernel clock the lab
    # hosts share, into a file of its own in this test's directory (/tmp is not private).
    stamp = 'date +%s.%N >> "$1"; sleep 1; date +%s.%N >> "$1"'
    calls = [(h, {"argv": ["sh", "-c", stamp, "sh", str(tmp_path / h.name)]}) for h in hosts]
    outcomes, _ = one_fan_out(map_calls, run_command, calls, limit=2)
    assert all(o.ok for o in outcomes)
    spans = []
    for host in hosts:
        start, end = map(float, (tmp_path / host.name).read_text().split())
        spans.append((start, end))
    assert most_at_once(spans) == 2, spans


def test_limit_must_be_positive(estate) -> None:
    with pytest.raises(ValueError, match="limit"):
        map_hosts(run_command, estate.hosts, limit=0, argv=["true"])
