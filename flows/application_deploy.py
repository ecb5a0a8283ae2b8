"""Application deploy: roll a recorded release of a service across its hosts, in batches, each
host behind its health gate, and roll every changed host back when one gate fails.

`deploy_release` carries one release record (REL…) to deployed or failed. It reads which
release each host runs, leaves alone the hosts already on the version, and changes the others
a canary first (alone) then batch by batch, the hosts of a batch at once: so at most one
batch's hosts are out of service at any time. Each host's step (`tasks.rollout`) holds a
maintenance window over that host only, puts the release in place, restarts and waits for the
health gate. The batches run inside one Prefect transaction: a failed gate stops the rollout,
the failing host puts itself back, and the transaction's rollback hooks put back every host
done before it, newest first. The requester is told either way.

The run leases its release (`release:ID`) and renews the lease while it works; a worker that
finds the lease lapsed (its process died) runs this again, and a run that finds its release
already rolling out puts back every host the record says was changed, closes the maintenance
windows the stopped run left open, and records the release failed: a rollout is never left
half-done, no window of it outlives it, and the record never claims what did not happen.
With `dry_run` it returns the plan and changes and records nothing. Each host's step and
putting hosts back are `tasks.rollout`'s; telling the requester and publishing the release,
`tasks.release_report`'s.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Estate, Service
from opsflow.itsm.releases import (
    CARRIED_STATES,
    CHANGED_STEPS,
    Release,
    ReleaseHost,
    plan_batches,
    rollback_summary,
    valid_batch,
)
from opsflow.itsm.releases import (
    ReleaseState as RecordState,
)
from opsflow.itsm.store.records import open_records
from opsflow.itsm.store.releases import LEASE_PREFIX
from opsflow.settings import get_settings
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.maintenance import close_windows_left_open
from opsflow.tasks.records import RunLease, current_flow_run_id
from opsflow.tasks.release_report import publish_release, tell_requester
from opsflow.tasks.releases import (
    ReleaseChange,
    put_release,
    read_release,
    valid_version,
)
from opsflow.tasks.rollout import ACTOR, HostRollout, put_back_changed, roll_out_host


class DeployError(PermanentError):
    """The rollout cannot start: the release, service or version is not what it must be."""


class RolloutPlan(BaseModel):
    """What a rollout did, or in a dry run would do: the batches and each host's change."""

    release: str | None = Field(default=None, description="The release's number, if recorded.")
    service: str
    version: str
    state: str = Field(description="The release's state afterwards; 'planned' in a dry run.")
    batches: list[list[str]] = Field(description="The hosts to change, in order, batch by batch.")
    hosts: list[ReleaseChange] = Field(default_factory=list)
    summary: str


def run_holder(flow_run_id: str | None) -> str:
    """Who holds a release's lease for the run `flow_run_id` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{flow_run_id}"


def _run_name() -> str:
    """The run's name: the release it carries, or the service and version of a dry run."""
    parameters = flow_run.parameters
    if parameters.get("release"):
        return f"deploy-{parameters['release']}"
    return f"plan-{parameters.get('service')}-{parameters.get('version')}"


@flow(
    name="deploy-release",
    flow_run_name=_run_name,
    persist_result=False,
)
def deploy_release(
    release: str | None = None,
    service: str | None = None,
    version: str | None = None,
    batch: str = "1",
    canary: int = 0,
    pause_s: float = 0.0,
    dry_run: bool = False,
    gate_deadline_s: float = 30.0,
    gate_passes: int = 3,
    lease_holder: str | None = None,
) -> RolloutPlan:
    """Roll a release of a service across its hosts, or say how it would (`dry_run`).

    Args:
        release: the recorded release (REL…) to carry; its service, version and batches are
            the record's. Without it only a dry run of `service` and `version` is allowed.
        service: the service, when no release is named (a dry run).
        version: the version, when no release is named (a dry run).
        batch, canary, pause_s: hosts changed at once (N or P%), 1 to change one host alone
            first, seconds between batches (when no release is named).
        dry_run: return the plan; change and record nothing.
        gate_deadline_s: how long each host's health gate may take to pass.
        gate_passes: health checks in a row each host must pass.
        lease_holder: who holds the release's lease for this run; a worker carrying it
            passes its own, by default it is this run.
    """
    logger = get_run_logger()
    estate = read_estate()
    record = open_records().releases.get(release) if release else None
    if record is not None:
        service, version = record.service, record.to_version
        batch, canary, pause_s = record.batch, record.canary, record.pause_s
    if not service or not version:
        raise DeployError("service and version: name both, or a recorded release")
    if record is None and not dry_run:
        raise DeployError(
            "release: name a recorded release (REL…) to roll out; record one with "
            "`opsflow release deploy` or the catalog's deploy-release item"
        )
    version = valid_version(version)
    valid_batch(batch)
    try:
        target = estate.service(service)
    except KeyError:
        raise DeployError(f"service: no service {service!r} in the estate") from None
    if dry_run:
        plan = _dry_run(estate, target, version, batch, canary, pause_s, record)
        logger.info("%s", plan.summary)
        return plan
    assert record is not None, "without a dry run a recorded release is required, above"
    return _carry(estate, target, record, lease_holder, gate_deadline_s, gate_passes)


def _carry(
    estate: Estate,
    service: Service,
    record: Release,
    lease_holder: str | None,
    gate_deadline_s: float,
    gate_passes: int,
) -> RolloutPlan:
    """Carry the release to a final state under its lease, tell its requester, publish it."""
    logger = get_run_logger()
    if record.state not in CARRIED_STATES:
        logger.info("%s is %s: nothing to do", record.number, record.state)
        return _result(record, [])
    holder = lease_holder or run_holder(current_flow_run_id())
    lease = RunLease(f"{LEASE_PREFIX}{record.id}", holder, get_settings().lease_seconds)
    if not lease.take():
        logger.info("%s is carried by %s: not twice at once", record.number, lease.taker())
        return _result(record, [])
    changes: list[ReleaseChange] = []
    try:
        with lease.renewing():
            record = _link_run(record)
            if record.state == "rolling-out":
                record = _finish_interrupted(estate, service, record, gate_deadline_s)
            else:
                record, changes = _roll_out(
                    estate, service, record, lease, gate_deadline_s, gate_passes
                )
            if record.is_closed:
                tell_requester(estate, record)
                publish_release(record)
    finally:
        lease.release()
    logger.info("%s %s: %s", record.number, record.state, record.outcome or "")
    return _result(record, changes)


# -- planning ---------------------------------------------------------------------------


def _dry_run(
    estate: Estate,
    service: Service,
    version: str,
    batch: str,
    canary: int,
    pause_s: float,
    record: Release | None,
) -> RolloutPlan:
    hosts = estate.hosts_of(service)
    changes = [put_release(h, service, version, dry_run=True) for h in hosts]
    to_change = [c.host for c in changes if c.state == "planned" and c.host]
    batches = plan_batches(to_change, batch, canary)
    steps = " then ".join("[" + ", ".join(b) + "]" for b in batches) or "nothing to change"
    if pause_s and len(batches) > 1:
        steps += f", pausing {pause_s:g}s between batches"
    return RolloutPlan(
        release=record.number if record else None,
        service=service.name,
        version=version,
        state="planned",
        batches=batches,
        hosts=changes,
        summary=f"dry run: {service.name} {version} on {len(to_change)} of {len(hosts)} hosts: "
        f"{steps}",
    )


# -- rolling out ------------------------------------------------------------------------


class RolloutStoppedError(PermanentError):
    """A host of the batch failed its step: the rollout stops and rolls back."""


class LeaseLostError(RolloutStoppedError):
    """Another worker took the release over while this run stalled: this run stops."""


def _roll_out(
    estate: Estate,
    service: Service,
    record: Release,
    lease: RunLease,
    gate_deadline_s: float,
    gate_passes: int,
) -> tuple[Release, list[ReleaseChange]]:
    """Change the hosts not yet on the version, batch by batch; roll all back if one fails."""
    logger = get_run_logger()
    releases = open_records().releases
    hosts = estate.hosts_of(service)
    reads = [read_release.submit(h, service) for h in hosts]
    states = {h.name: f.result() for h, f in zip(hosts, reads, strict=True)}
    entries = [
        ReleaseHost(
            host=h.name,
            previous=states[h.name].current,
            step="unchanged" if states[h.name].current == record.to_version else "pending",
            detail="already runs it" if states[h.name].current == record.to_version else "",
        )
        for h in hosts
    ]
    before = sorted({e.previous or "nothing" for e in entries if e.step == "pending"})
    record = releases.plan_hosts(
        record.id,
        entries,
        ", ".join(before) or None,
        ACTOR,
        datetime.now(UTC),
        current_flow_run_id(),
    )
    record = _move(record, "rolling-out")
    to_change = [e.host for e in entries if e.step == "pending"]
    batches = plan_batches(to_change, record.batch, record.canary)
    by_name = {h.name: h for h in hosts}
    changes: list[ReleaseChange] = []
    try:
        with transaction():
            for number, names in enumerate(batches):
                if number and record.pause_s:
                    logger.info("pausing %ss before the next batch", record.pause_s)
                    time.sleep(record.pause_s)
                if not lease.kept():
                    raise LeaseLostError(f"{record.number}: lease lost to {lease.taker()}")
                rollouts = [
                    HostRollout(
                        release_id=record.id,
                        number=record.number,
                        host=by_name[n],
                        service=service,
                        version=record.to_version,
                        previous=states[n].current,
                        estate=estate,
                        gate_deadline_s=gate_deadline_s,
                        gate_passes=gate_passes,
                    )
                    for n in names
                ]
                futures = [roll_out_host.submit(r) for r in rollouts]
                failed = []
                for future in futures:
                    try:
                        changes.append(future.result())
                    except Exception as exc:
                        failed.append(str(exc))
                if failed:
                    raise RolloutStoppedError("; ".join(failed))
    except LeaseLostError as exc:
        # A worker took the release over (this run stalled longer than its lease): the
        # hosts done are put back by the hooks and by the taker; the record is the taker's.
        logger.warning("%s: stepped aside", exc)
        return releases.get(record.id), changes
    except Exception as exc:
        # The transaction's hooks put back the hosts done before; a host of the failing
        # batch that finished after Prefect rolled the transaction back has no hook left to
        # run, so the record, which says what was changed, is the last word.
        record = put_back_changed(estate, service, releases.get(record.id), gate_deadline_s)
        logger.error("%s stopped and rolled back: %s", record.number, exc)
        return _move(
            record,
            "failed",
            outcome=f"stopped: {exc}"[:2000],
            rollback=rollback_summary(record),
        ), changes
    done = len(to_change)
    kept = len(hosts) - done
    return _move(
        releases.get(record.id),
        "deployed",
        outcome=f"{record.to_version} on {len(hosts)} hosts: {done} changed in "
        f"{len(batches)} batches, {kept} already ran it",
    ), changes


def _finish_interrupted(
    estate: Estate, service: Service, record: Release, gate_deadline_s: float
) -> Release:
    """A run found its release rolling out: the run carrying it stopped. Put back every host
    the record says was changed, close the maintenance windows the stopped run left open (only
    now: until the hosts are back they cover them), and record the release failed."""
    get_run_logger().warning("%s was rolling out when its run stopped: rolling back", record.number)
    record = put_back_changed(estate, service, record, gate_deadline_s)
    stopped = [r for r in record.flow_run_ids if r != current_flow_run_id()]
    close_windows_left_open(stopped, estate)
    return _move(
        record,
        "failed",
        outcome="interrupted: the run carrying it stopped mid-way; taken over and rolled back",
        rollback=rollback_summary(record),
    )


# -- the record -------------------------------------------------------------------------


def _move(record: Release, target: RecordState, **changes: object) -> Release:
    return open_records().releases.move(
        record.id, target, ACTOR, datetime.now(UTC), current_flow_run_id(), **changes
    )


def _link_run(record: Release) -> Release:
    run_id = current_flow_run_id()
    if not run_id:
        return record
    return open_records().releases.link_flow_run(record.id, run_id, ACTOR, datetime.now(UTC))


def _result(record: Release, changes: list[ReleaseChange]) -> RolloutPlan:
    changed = [h.host for h in record.hosts if h.step in CHANGED_STEPS or h.step == "rolled-back"]
    return RolloutPlan(
        release=record.number,
        service=record.service,
        version=record.to_version,
        state=record.state,
        batches=plan_batches(changed, record.batch, record.canary),
        hosts=changes,
        summary=f"{record.number} {record.state}: {record.outcome or '-'}"
        + (f"; {record.rollback}" if record.rollback else ""),
    )


if __name__ == "__main__":
    import sys

    deploy_release(sys.argv[1])
