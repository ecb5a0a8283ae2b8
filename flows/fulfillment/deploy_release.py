"""deploy-release: the catalog's way to ask for a release, approved as the estate's catalog
says (a standard pre-approved change, or one approver).

Once the request is approved this records the release (requester and approver as the
request has them, linked to it) and wakes a worker to roll it out (`deploy-release`, carried
like an operator's release, taken over if its worker dies), then follows it to its end: the
request is fulfilled when the release is deployed, and fails when it failed. Run twice for
one request it follows the release already recorded instead of recording another.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.logging import get_run_logger

from opsflow.flows.fulfillment import FulfillmentError, FulfillmentResult, find_service
from opsflow.flows.work import roll_out_release
from opsflow.itsm.releases import RELEASE_STATES, Release, valid_batch
from opsflow.itsm.store.records import open_records
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.records import current_flow_run_id
from opsflow.tasks.releases import valid_version

ACTOR = "request-fulfillment"
FOLLOW_S = 1.0
"""How often the request reads its release while the rollout goes on."""


@task(cache_policy=NONE, timeout_seconds=60)
def record_requested_release(
    reference: str, service: str, version: str, batch: str, canary: int, pause_s: int
) -> Release:
    """The release recorded for request `reference`: the one already there, else a new one
    approved as the request was."""
    records = open_records()
    found = records.releases.list(request=reference, limit=1)
    if found:
        return found[0]
    request = records.requests.get(reference)
    return records.releases.create(
        service,
        version,
        requester=request.requester,
        approver=request.approver or "catalog",
        actor=ACTOR,
        now=datetime.now(UTC),
        batch=batch,
        canary=canary,
        pause_s=float(pause_s),
        request=request.number,
        flow_run_id=current_flow_run_id(),
    )


@flow(name="deploy-release-request", flow_run_name="release-{service}-{version}")
def deploy_release_request(
    service: str,
    version: str,
    batch: str = "1",
    canary: int = 0,
    pause_s: int = 0,
    reference: str | None = None,
    dry_run: bool = False,
) -> FulfillmentResult:
    """Record the release a request asked for, have it rolled out, and report how it ended.

    Args:
        service: the service, as the estate names it.
        version: the release to roll out.
        batch: hosts changed at once: N or P%.
        canary: 1 to change one host alone first.
        pause_s: seconds between batches.
        reference: the service request (REQ…) this fulfills; set by request fulfillment.
        dry_run: say what would be recorded; record nothing.
    """
    target = find_service(read_estate(), service)
    version = valid_version(version)
    try:
        batch = valid_batch(batch)
    except ValueError as exc:
        raise FulfillmentError(str(exc)) from None
    if dry_run or reference is None:
        return FulfillmentResult(
            summary=f"dry run: would record a release of {target.name} {version} (batch "
            f"{batch}, canary {canary}) and roll it out",
            changed=False,
            dry_run=True,
        )
    release = record_requested_release(reference, target.name, version, batch, canary, pause_s)
    get_run_logger().info("%s recorded for %s", release.number, reference)
    roll_out_release.delay()
    while release.state not in RELEASE_STATES.final:
        time.sleep(FOLLOW_S)
        release = open_records().releases.get(release.id)
    summary = f"{release.number} {release.state}: {release.outcome or '-'}"
    if release.rollback:
        summary += f"; {release.rollback}"
    if release.state != "deployed":
        raise FulfillmentError(summary)
    return FulfillmentResult(summary=summary, changed=True)
