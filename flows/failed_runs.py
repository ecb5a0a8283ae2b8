"""Page the on-call when a flow run of an ITIL process fails or crashes.

`prefect.yaml` starts this flow from a trigger on Prefect's own `prefect.flow-run.Failed`
and `prefect.flow-run.Crashed` events of runs tagged `itil:*`, so a restoration, a
fulfillment or an access change that dies is a page, not a red dot in the UI someone may
see. Its own deployment is not tagged `itil:*`: a page that fails pages nobody again.
"""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from opsflow.tasks.flow_runs import read_flow_run
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.notify import notify_on_call

ITIL_TAG_PREFIX = "itil:"


@flow(name="page-on-failed-run")
def page_on_failed_run(flow_run: str) -> str:
    """Tell the on-call of the estate's `default_team` which run failed, of which process,
    and why (its state's message); returns who was paged.

    Args:
        flow_run: the run's id, or its event resource id (`prefect.flow-run.<id>`).
    """
    run = read_flow_run(flow_run)
    processes = [t.removeprefix(ITIL_TAG_PREFIX) for t in run.tags if t.startswith(ITIL_TAG_PREFIX)]
    estate = read_estate()
    where = f"deployment {run.deployment}" if run.deployment else "no deployment"
    subject = f"opsflow: {run.name} {run.state} ({', '.join(processes) or run.flow})"
    body = "\n".join(
        [
            f"Flow run {run.name} of flow {run.flow} ({where}) is {run.state}.",
            f"Process: {', '.join(processes) or 'none tagged'}; tags: {', '.join(run.tags)}.",
            f"Why: {run.message or 'no message'}",
            f"Run: {run.url or run.id}",
        ]
    )
    get_run_logger().info("paging about %s (%s)", run.name, run.state)
    return notify_on_call(estate, estate.settings.default_team, subject, body)


if __name__ == "__main__":
    import sys

    page_on_failed_run(sys.argv[1])
