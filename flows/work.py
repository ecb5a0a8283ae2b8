"""The wake-up calls that Prefect hands to opsflow's workers (`opsflow worker`).

The desk and triage submit these background tasks with `.delay()`; Prefect's server gives
each to one of the task workers subscribed to it, on whichever machine. They take no
parameters, on purpose: a background task's parameters travel through result storage,
which would have to be shared by every machine. The records are the queue and leases
the claims; a wake-up only says "there is work", so a lost or doubled one costs nothing
(the workers' sweeps find what no wake-up reached).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class _Installed:
    workshop: Workshop | None = None


_installed = _Installed()


def install(workshop: Workshop | None) -> None:
    """Route this process's wake-ups to `workshop` (a worker), or nowhere (None)."""
    _installed.workshop = workshop


def _workshop() -> Workshop:
    if _installed.workshop is None:
        raise OpsError("opsflow's wake-ups run only in an `opsflow worker` process")
    return _installed.workshop


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
    workshop = _installed.workshop
    if workshop is None or not workshop.restore_here():
        restore_incident.delay()


WAKE_UPS = (triage_events, restore_incident)
"""Every wake-up a worker serves."""
