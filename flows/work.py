"""The wake-up calls that Prefect hands to opsflow's workers (`opsflow worker`).

The desk (events, requests, access changes, releases) and triage (incidents) submit these background
tasks with `.delay()`; Prefect's server gives
each to one of the task workers subscribed to it, on whichever machine. They take no
parameters, on purpose: a background task's parameters travel through result storage,
which would have to be shared by every machine. The records are the queue and leases
the claims; a wake-up only says "there is work", so a lost or doubled one costs nothing
(the workers' sweeps find what no wake-up reached).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from prefect import task

from opsflow.errors import OpsError


class Workshop(Protocol):
    """What a worker process offers its wake-ups."""

    def triage_soon(self) -> None:
        """Make sure a triage pass follows in this process."""

    def restore_next(self) -> str | None:
        """Restore the next incident nobody carries, here; its number or None."""

    def restore_here(self) -> bool:
        """Start restoring the next incident nobody carries in this process, unless full."""

    def fulfill_next(self) -> str | None:
        """Start carrying the next request nobody carries, here; its number or None."""

    def provision_next(self) -> int | None:
        """Start the next access change nobody carries, here; its grant's id or None."""

    def deploy_next(self) -> str | None:
        """Start rolling out the next release nobody carries, here; its number or None."""


@dataclass
class _Installed:
    workshops: list[Workshop] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_installed = _Installed()


def install(workshop: Workshop) -> None:
    """Route this process's wake-ups to `workshop` (a worker) until it is uninstalled.

    The last installed takes them: a test may run a worker on a records database of its own
    while the session's worker lives on in the same process.
    """
    with _installed.lock:
        _installed.workshops.append(workshop)


def uninstall(workshop: Workshop) -> None:
    """Stop routing wake-ups to `workshop`; the one installed before it takes them again."""
    with _installed.lock:
        if workshop in _installed.workshops:
            _installed.workshops.remove(workshop)


def _installed_workshop() -> Workshop | None:
    with _installed.lock:
        return _installed.workshops[-1] if _installed.workshops else None


def _workshop() -> Workshop:
    workshop = _installed_workshop()
    if workshop is None:
        raise OpsError("opsflow's wake-ups run only in an `opsflow worker` process")
    return workshop


@task(name="triage-events", persist_result=False, tags=["itil:event"])
def triage_events() -> None:
    """Events were stored: triage them (coalesced with any pass already due here)."""
    _workshop().triage_soon()


@task(name="restore-incident", persist_result=False, tags=["itil:incident"])
def restore_incident() -> str | None:
    """An incident waits for its runbook: restore the oldest such incident nobody carries."""
    return _workshop().restore_next()


def restore_soon() -> None:
    """An incident now waits for its runbook: restore it in this process if it is a worker
    with room (a hop through Prefect to another costs ~0.15 s of the closed loop), else wake
    a worker."""
    workshop = _installed_workshop()
    if workshop is None or not workshop.restore_here():
        restore_incident.delay()


@task(name="fulfill-request", persist_result=False, tags=["itil:request-fulfillment"])
def fulfill_request() -> str | None:
    """A service request was submitted: start carrying the oldest request nobody carries.

    Its `request-fulfillment` run goes on in a thread of the worker's own, not in the task
    worker's: a request may wait hours for an approver and must not hold a slot that
    restorations need.
    """
    return _workshop().fulfill_next()


@task(name="provision-access", persist_result=False, tags=["itil:access"])
def provision_access() -> int | None:
    """An access grant was approved or a revocation asked for: carry out the oldest such
    change nobody carries (`grant-access` or `revoke-access`), in a thread of the worker's."""
    return _workshop().provision_next()


@task(name="roll-out-release", persist_result=False, tags=["itil:release-deployment"])
def roll_out_release() -> str | None:
    """A release was recorded: start rolling out the oldest release nobody carries, in a
    thread of the worker's (`deploy-release`)."""
    return _workshop().deploy_next()


WAKE_UPS = (triage_events, restore_incident, fulfill_request, provision_access, roll_out_release)
"""Every wake-up a worker serves."""
