"""One host's step of a release's rollout, and putting the host back: the unit a rolling deploy
repeats, batch by batch, inside one Prefect transaction.

`roll_out_host` records the host as deploying on the release before it touches it, holds a
maintenance window over that host alone (its own alerts are expected, nobody else's) and the
host's concurrency slot, puts the release in place, restarts the service and waits for its
health gate. When the restart or the gate fails it puts this host back itself (a failed task
stages no rollback hook in Prefect) and raises; when it succeeds its rollback hook stays
staged, so a later failure anywhere in the rollout puts this host back too. Each host's
step is written on the release record as it happens, so the record says which hosts were
changed even if the process dies: a takeover puts those back (`put_back_changed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NONE
from prefect.transactions import Transaction, get_transaction

from opsflow.inventory.models import Estate, Host, Service
from opsflow.itsm.releases import CHANGED_STEPS, HostStep, Release, ReleaseHost
from opsflow.itsm.store.records import open_records
from opsflow.tasks.concurrency import host_slot
from opsflow.tasks.health_gate import wait_for_health_gate
from opsflow.tasks.maintenance import maintenance_window
from opsflow.tasks.records import current_flow_run_id
from opsflow.tasks.releases import (
    ReleaseChange,
    put_release,
    restart_release,
    roll_back_release,
)

ACTOR = "application-deploy"
WINDOW_MINUTES = 15.0
"""The longest one host's window lasts if the run dies inside it: a restart and a gate."""

logger = logging.getLogger("opsflow.tasks.rollout")


@dataclass(frozen=True)
class HostRollout:
    """What one host's step needs to know, and its rollback hook to put the host back."""

    release_id: int
    number: str
    host: Host
    service: Service
    version: str
    previous: str | None
    estate: Estate
    gate_deadline_s: float = 30.0
    gate_passes: int = 3


def record_host_step(rollout: HostRollout, step: HostStep, detail: str = "") -> None:
    """Write where this host is in the rollout on the release record, audited with the run."""
    entry = ReleaseHost(
        host=rollout.host.name, previous=rollout.previous, step=step, detail=detail[-500:]
    )
    open_records().releases.record_host(
        rollout.release_id, entry, ACTOR, datetime.now(UTC), current_flow_run_id()
    )


@task(
    cache_policy=NONE,
    retries=0,  # it restarts the service: not repeated blindly
    timeout_seconds=900,
    task_run_name="roll_out_host[{rollout.service.name}@{rollout.host.name}]",
)
def roll_out_host(rollout: HostRollout) -> ReleaseChange:
    """Put the release in place on one host, restart into it and pass its health gate.

    Raises whatever stopped it (the restart, `HealthGateError`), after putting the host back.
    """
    transaction = get_transaction()
    assert transaction is not None, "a host's rollout runs in the release's transaction"
    transaction.set("rollout", rollout)
    host, service = rollout.host, rollout.service
    record_host_step(rollout, "deploying", f"putting {rollout.version} in place")
    reason = f"{rollout.number}: {service.name} {rollout.previous} -> {rollout.version}"
    with (
        maintenance_window([host.name], reason, WINDOW_MINUTES, estate=rollout.estate),
        host_slot(host.name),
    ):
        try:
            put = put_release(host, service, rollout.version)
        except Exception as exc:
            record_host_step(rollout, "pending", f"not put in place: {exc}")
            raise
        try:
            restart_release(host, service)
            gate = wait_for_health_gate(host, service, rollout.gate_deadline_s, rollout.gate_passes)
        except Exception as exc:
            record_host_step(rollout, "failed", str(exc))
            _put_back_held(rollout)
            raise
    record_host_step(rollout, "deployed", f"{put.detail}; gate passed: {gate.detail}")
    return put


@roll_out_host.on_rollback
def put_back_on_rollback(transaction: Transaction) -> None:
    """The rollout failed after this host was done: put it back on its previous release."""
    put_host_back(transaction.get("rollout"))


def put_host_back(rollout: HostRollout) -> bool:
    """Put the host back on the release it ran before, restart it, wait for its gate; record
    the outcome on the release. Never raises (one host that cannot be put back must not stop
    the others' rollbacks): False when it could not, and the record says why."""
    host = rollout.host
    reason = f"{rollout.number}: rolling {rollout.service.name} back to {rollout.previous}"
    try:
        with (
            maintenance_window([host.name], reason, WINDOW_MINUTES, estate=rollout.estate),
            host_slot(host.name),
        ):
            return _put_back_held(rollout)
    except Exception as exc:
        logger.exception("%s: %s could not be put back", rollout.number, host.name)
        record_host_step(rollout, "rollback-failed", f"window or slot: {exc}")
        return False


def _put_back_held(rollout: HostRollout) -> bool:
    """`put_host_back` with the host's window and slot already held."""
    host, service = rollout.host, rollout.service
    if rollout.previous is None:
        record_host_step(rollout, "rollback-failed", "no previous release to go back to")
        return False
    try:
        back = roll_back_release.fn(host, service, rollout.version, rollout.previous)
        restart_release.fn(host, service)
        gate = wait_for_health_gate.fn(host, service, rollout.gate_deadline_s, 1)
    except Exception as exc:
        logger.error("%s: putting %s back failed: %s", rollout.number, host.name, exc)
        record_host_step(rollout, "rollback-failed", str(exc))
        return False
    record_host_step(rollout, "rolled-back", f"{back.detail}; healthy: {gate.detail}")
    return True


def put_back_changed(
    estate: Estate, service: Service, record: Release, gate_deadline_s: float
) -> Release:
    """Put back, newest first, every host the record says was changed and not yet put back;
    the record as it then is."""
    for entry in reversed(record.hosts):
        if entry.step not in CHANGED_STEPS:
            continue
        put_host_back(
            HostRollout(
                release_id=record.id,
                number=record.number,
                host=estate.host(entry.host),
                service=service,
                version=record.to_version,
                previous=entry.previous,
                estate=estate,
                gate_deadline_s=gate_deadline_s,
            )
        )
    return open_records().releases.get(record.id)
