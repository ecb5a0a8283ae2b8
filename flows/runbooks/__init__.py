"""Restoration runbooks, one per module, each a diagnose and a remediate task; and the
estate's own, declared in its runbooks.yaml (`declared`).

Verification is common to all (the service's health check, polled to a deadline) and lives
in `tasks.services.verify_restored`; a runbook may add checks of its own (`verify`). Each
remediate task has a rollback hook that undoes or records what it changed when the
restoration's transaction fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from prefect.transactions import Transaction, get_transaction
from pydantic import BaseModel, Field

from opsflow.inventory.models import Estate, Host, Service
from opsflow.itsm.store.records import open_records
from opsflow.tasks.change import Change
from opsflow.tasks.service_control import control_of
from opsflow.tasks.ssh import CommandResult, execute


class Diagnosis(BaseModel):
    """What a runbook found on the host before acting."""

    summary: str
    facts: dict[str, str] = Field(default_factory=dict)


class Remediation(Change):
    """What a runbook's remediate step did on the host (made), or why it did nothing
    (unchanged); a runbook has no dry run, so never planned."""

    actions: list[str] = Field(description="What it did, step by step, or why nothing.")
    ok: bool = Field(default=True, description="Whether every command it ran succeeded.")
    output: str = Field(default="", description="The end of what the last command said.")

    @classmethod
    def ran(cls, host: Host, action: str, target: str, results: list[CommandResult]) -> Self:
        """Made by running `results`' commands in turn: ok when each exited 0, with what the
        last one said."""
        actions = [f"ran {r.command}: exit {r.exit_status}" for r in results]
        last = results[-1]
        return cls.made(
            host.name,
            action,
            target,
            "; ".join(actions),
            actions=actions,
            ok=all(r.ok for r in results),
            output=(last.stderr or last.stdout).strip()[-500:],
        )


@dataclass(frozen=True)
class Runbook:
    """A named restoration procedure."""

    name: str
    description: str
    diagnose: Any
    remediate: Any
    verify_disk: bool = False
    verify: Any = None
    """(host, service, deadline_s) -> what it checked: more checks after the health check."""


def keep_target(host: Host, service: Service) -> None:
    """Keep the host and service a remediation acts on in its restoration's transaction, for
    its rollback hook."""
    transaction = get_transaction()
    assert transaction is not None, "a remediation runs in its restoration's transaction"
    transaction.set("target", (host, service))


def stop_target(transaction: Transaction) -> None:
    """Rollback hook: verification failed after the service was (re)started, so stop it; no
    hung or half-started process is left behind, and a human finds a clean state."""
    host, service = transaction.get("target")
    result = execute(host, control_of(service).stop, check=False, timeout_s=60)
    record_rollback(transaction, f"stopped {service.name} on {host.name}: {result.command}")


def record_rollback(transaction: Transaction, text: str) -> None:
    """Write what a rollback hook did into the incident's worklog (the restoration sets its id)."""
    incident_id = transaction.get("incident_id", None)
    if incident_id is not None:
        open_records().worklog.add(incident_id, "rollback", text, datetime.now(UTC))


def runbooks() -> dict[str, Runbook]:
    """Every runbook opsflow can run, by name."""
    from opsflow.flows.runbooks import free_disk_space, recover_hung_service, restart_service

    return {
        r.name: r
        for r in (restart_service.RUNBOOK, free_disk_space.RUNBOOK, recover_hung_service.RUNBOOK)
    }


def find_runbook(estate: Estate, name: str, reference: str) -> Runbook | None:
    """The runbook called `name`: a shipped one, else one the estate declares, with its
    parameters' defaults (ValueError naming a parameter that has none or is refused).

    Args:
        estate: the estate whose runbooks.yaml may declare it.
        name: the runbook's name.
        reference: the incident or request it runs for, its steps' `{reference}`.
    """
    shipped = runbooks().get(name)
    if shipped is not None:
        return shipped
    declared = estate.declared_runbook(name)
    if declared is None:
        return None
    from opsflow.flows.runbooks.declared import declared_runbook

    return declared_runbook(declared, declared.parameter_values({}), reference)
