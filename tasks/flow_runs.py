"""Read flow runs from the Prefect server: what the on-call is told about a run that failed."""

from __future__ import annotations

from uuid import UUID

from prefect import task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_UI_URL
from pydantic import BaseModel

from opsflow.errors import PermanentError

RESOURCE_PREFIX = "prefect.flow-run."
"""How Prefect's events name a flow run: `prefect.flow-run.<id>`."""


class FlowRunNotFoundError(PermanentError, LookupError):
    """The flow run named is not one the server knows, or is not a flow run id at all."""


class FlowRunSummary(BaseModel):
    """A flow run as a page about it names it."""

    id: str
    name: str
    flow: str
    deployment: str | None
    tags: list[str]
    state: str
    message: str
    url: str | None


def flow_run_id(reference: str) -> UUID:
    """The id in a flow run's id or event resource id (`prefect.flow-run.<id>`); refused
    plainly when it is neither, since a trigger or a person passes it in."""
    text = reference.removeprefix(RESOURCE_PREFIX)
    try:
        return UUID(text)
    except ValueError:
        raise FlowRunNotFoundError(
            f"flow_run: {reference[:80]!r} is not a flow run id or prefect.flow-run.<id>"
        ) from None


@task(cache_policy=NONE, timeout_seconds=60)
def read_flow_run(reference: str) -> FlowRunSummary:
    """The flow run `reference` names: its flow, deployment, tags, state and its message
    (Prefect's client itself retries what the server answers busy)."""
    run_id = flow_run_id(reference)
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise FlowRunNotFoundError(f"flow_run: no flow run {run_id}") from None
        flow = client.read_flow(run.flow_id).name
        deployment = client.read_deployment(run.deployment_id).name if run.deployment_id else None
    ui = PREFECT_UI_URL.value()
    return FlowRunSummary(
        id=str(run.id),
        name=run.name,
        flow=flow,
        deployment=deployment,
        tags=sorted(run.tags),
        state=run.state.name if run.state and run.state.name else "unknown",
        message=(run.state.message or "") if run.state else "",
        url=f"{ui}/runs/flow-run/{run.id}" if ui else None,
    )
