"""Runbooks declared in the estate (runbooks.yaml), run as the shipped ones are.

`declared_runbook` turns one into a `Runbook`: its diagnose steps make the diagnosis, its
remediate steps the remediation, each step a task run of its own in the restoration's
transaction; a remediate step that ran (or failed part way) is undone by its `rollback`
steps when the transaction rolls back, the latest first. Its verify steps are polled after
the service's health check passes, until they pass or the deadline.
"""

from __future__ import annotations

import time
from functools import partial

from prefect import task
from prefect.cache_policies import NONE
from prefect.transactions import Transaction, get_transaction

from opsflow.errors import OpsError, PermanentError
from opsflow.flows.runbooks import Diagnosis, Remediation, Runbook, record_rollback
from opsflow.inventory.models import Host, Service
from opsflow.inventory.runbooks import DeclaredRunbook, RunbookStep
from opsflow.tasks.runbook_steps import (
    StepFailedError,
    StepResult,
    perform_step,
    poll_step,
    step_values,
)


class RunbookFailedError(PermanentError):
    """A declared runbook's step failed; the message names the runbook and the step."""


def declared_runbook(
    runbook: DeclaredRunbook, parameters: dict[str, str], reference: str
) -> Runbook:
    """The declared runbook, with its checked parameter values, ready for restoration."""
    return Runbook(
        name=runbook.name,
        description=runbook.description,
        diagnose=partial(diagnose_steps, runbook, parameters, reference),
        remediate=partial(remediate_steps, runbook, parameters, reference),
        verify=partial(verify_steps, runbook, parameters, reference),
    )


def _label(runbook: DeclaredRunbook, phase: str, index: int, step: RunbookStep) -> str:
    return f"{runbook.name}: {phase}[{index}] ({step.name})"


def diagnose_steps(
    runbook: DeclaredRunbook,
    parameters: dict[str, str],
    reference: str,
    host: Host,
    service: Service,
) -> Diagnosis:
    """Run the diagnose steps in order; what each said becomes a fact of the diagnosis."""
    values = step_values(host, service, reference, parameters)
    facts: dict[str, str] = {}
    lines = []
    for index, step in enumerate(runbook.diagnose):
        result = perform_step(
            _label(runbook, "diagnose", index, step), step, "diagnose", False, host, values
        )
        facts[step.name] = result.output[-500:]
        said = result.output.strip().splitlines()[-1:] or [result.detail]
        lines.append(f"{step.name}: {said[0][:200]}")
    summary = "; ".join(lines) or "no diagnose steps"
    return Diagnosis(summary=f"{runbook.name} on {host.name}: {summary}", facts=facts)


def remediate_steps(
    runbook: DeclaredRunbook,
    parameters: dict[str, str],
    reference: str,
    host: Host,
    service: Service,
) -> Remediation:
    """Run the remediate steps in order, each undone on rollback; stop at the first failure,
    which fails the runbook (and so rolls back what ran)."""
    values = step_values(host, service, reference, parameters)
    actions: list[str] = []
    changed = False
    for index, step in enumerate(runbook.remediate):
        label = _label(runbook, "remediate", index, step)
        result = apply_remediation_step(label, step, host, values)
        actions.append(f"{step.name}: {result.detail}")
        changed = changed or result.changed
        if not result.ok:
            raise RunbookFailedError(f"{label} failed: {result.detail}")
    target = f"{runbook.name} on {service.name}"
    if not changed:
        return Remediation.unchanged(
            host.name, "remediate", target, "no step changes the host", actions=actions
        )
    return Remediation.made(host.name, "remediate", target, "; ".join(actions), actions=actions)


@task(cache_policy=NONE, task_run_name="remediate[{label}@{host.name}]")
def apply_remediation_step(
    label: str, step: RunbookStep, host: Host, values: dict[str, str]
) -> StepResult:
    """Run one remediate step; a failure is returned (`ok` false), not raised, so the step
    is undone with the others when the restoration rolls back."""
    transaction = get_transaction()
    assert transaction is not None, "a remediation runs in its restoration's transaction"
    transaction.set("undo", (label, step, host, values))
    changes = step.changes is not False
    try:
        return perform_step(label, step, "remediate", changes, host, values)
    except OpsError as exc:
        return StepResult(
            host=host.name,
            action="remediate",
            target=label,
            state="made" if changes else "unchanged",  # it may have acted part way
            detail=str(exc),
            phase="remediate",
            ok=False,
        )


@apply_remediation_step.on_rollback
def undo_remediation_step(transaction: Transaction) -> None:
    """Run the step's rollback steps, each once; one that fails is recorded and the others
    still run: a human meets the service in the cleanest state there is."""
    label, step, host, values = transaction.get("undo")
    for index, undo in enumerate(step.rollback):
        undo_label = f"{label} rollback[{index}] ({undo.name})"
        try:
            result = perform_step(undo_label, undo, "rollback", True, host, values, as_task=False)
            record_rollback(transaction, f"{undo_label} on {host.name}: {result.detail}")
        except OpsError as exc:
            record_rollback(transaction, f"{undo_label} on {host.name} failed: {exc}")


@task(cache_policy=NONE, task_run_name="verify[{runbook.name}@{host.name}]")
def verify_steps(
    runbook: DeclaredRunbook,
    parameters: dict[str, str],
    reference: str,
    host: Host,
    service: Service,
    deadline_s: float,
) -> str:
    """Poll each verify step until it passes, all within `deadline_s`; what they said."""
    values = step_values(host, service, reference, parameters)
    deadline = time.monotonic() + deadline_s
    said = []
    for index, step in enumerate(runbook.verify):
        label = _label(runbook, "verify", index, step)
        try:
            result = poll_step(label, step, host, values, deadline)
        except OpsError as exc:
            raise StepFailedError(f"verification failed after {deadline_s:g}s: {exc}") from None
        said.append(f"{step.name}: {result.detail.removeprefix('unchanged: read only: ')}")
    return "; ".join(said)
