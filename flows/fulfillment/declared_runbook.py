"""run-declared-runbook: a runbook of the estate's runbooks.yaml, run because someone asked.

A catalog item whose fulfillment names a runbook (`fulfillment: {runbook: NAME}`) runs it
here on the request's host and service, with the request's other inputs as its parameters:
diagnose, remediate, the service's health check and the runbook's own verify steps, inside
a transaction whose rollback undoes the remediate steps, holding the host's slot, as
incident restoration runs it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.transactions import transaction

from opsflow.flows.fulfillment import FulfillmentError, FulfillmentResult, service_on_host
from opsflow.flows.runbooks.declared import declared_runbook
from opsflow.tasks.change import Change
from opsflow.tasks.concurrency import host_slot
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.services import verify_restored


@flow(name="run-declared-runbook", flow_run_name="{runbook}-on-{service}-at-{host}")
def run_declared_runbook(
    runbook: str,
    service: str,
    host: str,
    parameters: dict[str, Any] | None = None,
    reference: str = "",
    dry_run: bool = False,
    verify_deadline_s: float = 20.0,
) -> FulfillmentResult:
    """Run a declared runbook on one host of a service and verify the service after it.

    Args:
        runbook: the runbook's name in runbooks.yaml.
        service: the service, as the estate names it.
        host: one of the service's hosts.
        parameters: the runbook's parameters by name; defaults fill the others.
        reference: the request it runs for, its steps' `{reference}`.
        dry_run: run only the diagnose steps and list the remediate steps it would run.
        verify_deadline_s: how long the health check and verify steps may take to pass.
    """
    estate = read_estate()
    found = estate.declared_runbook(runbook)
    if found is None:
        raise FulfillmentError(f"runbook: no runbook {runbook!r} in runbooks.yaml")
    target_service, target_host = service_on_host(estate, service, host)
    try:
        values = found.parameter_values(parameters or {})
    except ValueError as exc:
        raise FulfillmentError(str(exc)) from None
    steps = declared_runbook(found, values, reference or f"{runbook}@{host}")
    with host_slot(target_host.name):
        diagnosis = steps.diagnose(target_host, target_service)
        if dry_run:
            planned = [
                Change.planned(target_host.name, "remediate", runbook, f"run {step.name}")
                for step in found.remediate
            ]
            return FulfillmentResult(
                summary=f"dry run: {diagnosis.summary}; would run "
                + ", ".join(step.name for step in found.remediate),
                changed=False,
                dry_run=True,
                hosts=planned,
            )
        with transaction():
            remediation = steps.remediate(target_host, target_service)
            health = verify_restored(target_host, target_service, verify_deadline_s)
            checked = steps.verify(target_host, target_service, verify_deadline_s)
    detail = health.detail + (f"; {checked}" if checked else "")
    get_run_logger().info("%s on %s: %s", runbook, host, detail)
    return FulfillmentResult(
        summary=f"{runbook} on {host}: " + "; ".join(remediation.actions) + f"; verified: {detail}",
        changed=remediation.changed,
        hosts=[remediation],
    )
