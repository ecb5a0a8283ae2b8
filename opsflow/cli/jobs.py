"""Run a deployment of `prefect.yaml` now and follow it: `opsflow run JOB`."""

from __future__ import annotations

import json
import time
from typing import Any, cast
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from opsflow.errors import OpsError
from opsflow.inventory.loader import load_estate
from opsflow.runtime.project import find_deployment
from opsflow.settings import get_settings

RUN_TIMEOUT_S = 1800.0
BUSY_PAUSE_S = 2.0
"""How long to wait before starting a job again that another run of it kept from running."""


class JobError(OpsError):
    """A routine job could not be started or did not complete."""


def _expected_tasks(job: str) -> int | None:
    """How many task runs the job will make on the current estate, for the progress bar.

    Reading the estate is one; each fan-out over hosts is one (its table lists the hosts).
    """
    try:
        estate = load_estate(get_settings().estate_dir)
    except OpsError:
        return None
    per_job = {
        "health-check": sum(1 for s in estate.services if estate.hosts_of(s)),
        # facts, then service states; then the facts history is written
        "gather-facts": 3,
    }
    count = per_job.get(job)
    return None if count is None else count + 1


def run_job(job: str, console: Console) -> list[dict[str, Any]]:
    """Start the deployment `job` on the Prefect server, show progress, print its table.

    Returns the rows of the table artifact the run published; raises `JobError` if the
    run did not complete. A job that runs one at a time (its deployment's concurrency limit
    cancels a new run while one is going, a scheduled one say) is started again once the
    other run is over: asked to run now, it runs.
    """
    spec = find_deployment(job)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run, rows = _run_once(spec.full_name, job, console, deadline)
        state = run.state
        busy = (
            state is not None
            and state.is_cancelled()
            and "concurrency limit reached" in (state.message or "")
        )
        if not busy or time.monotonic() > deadline:
            break
        console.print(
            Text(f"{job}: another run of it is going; starting again when it ends", style="yellow")
        )
        time.sleep(BUSY_PAUSE_S)
    _print_rows(console, job, rows)
    console.print(
        Text.assemble(f"{job}: run ", (run.name, "bold"), f" {state.name if state else 'unknown'}")
    )
    if state is None or not state.is_completed():
        raise JobError(
            f"{job}: run {run.name} ended {state.name if state else 'unknown'}: "
            f"{state.message if state else ''}"
        )
    return rows


def _run_once(
    deployment: str, job: str, console: Console, deadline: float
) -> tuple[Any, list[dict[str, Any]]]:
    """Start one run of `deployment`, follow it with a progress bar until it ends, and return
    it with the rows of its table artifact."""
    try:
        # Prefect types run_deployment() as the run or its coroutine; from sync code it is the run.
        flow_run = cast(FlowRun, run_deployment(deployment, timeout=0))
    except Exception as exc:
        raise JobError(
            f"cannot start {deployment}: {exc} (is `make up` serving the deployments?)"
        ) from exc
    with (
        get_client(sync_client=True) as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        bar = progress.add_task(f"{job} ({flow_run.name})", total=_expected_tasks(job))
        while True:
            run = client.read_flow_run(flow_run.id)
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
            done = sum(1 for t in tasks if t.state is not None and t.state.is_final())
            progress.update(bar, completed=done)
            if run.state is not None and run.state.is_final():
                break
            if time.monotonic() > deadline:
                raise JobError(f"{job}: run {run.name} still {run.state_name} after timeout")
            time.sleep(0.3)
        rows = _table_rows(client, flow_run.id)
    return run, rows


def _table_rows(client: Any, flow_run_id: UUID) -> list[dict[str, Any]]:
    """The rows of the job's own table: the keyed one, not its fan-outs' (which have no key)."""
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    for artifact in sorted(artifacts, key=lambda a: a.key is None):
        if artifact.type == "table" and isinstance(artifact.data, list | str):
            data = artifact.data
            if isinstance(data, str):
                data = json.loads(data)
            return list(data)
    return []


def _print_rows(console: Console, job: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=job)
    columns = list(rows[0])
    for column in columns:
        table.add_column(column)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(
                Text("" if value is None else str(value), style="red" if value is False else "")
            )
        table.add_row(*cells)
    console.print(table)
