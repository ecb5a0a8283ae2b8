"""Fulfillment flows for the service catalog, one per module, each safe to run twice.

A catalog item's `fulfillment.flow` names one of these (`fulfillment.runbook` runs
`run-declared-runbook`); request fulfillment runs it as a
subflow with the item's fixed parameters and the request's inputs, and records the
`FulfillmentResult` it returns (summary, per-host changes, attached files) on the request.
Each flow also runs on its own, with `dry_run` to report what it would do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from opsflow.errors import PermanentError
from opsflow.inventory.models import Estate, Host, Service
from opsflow.itsm.requests import Attachment
from opsflow.tasks.change import Change


class FulfillmentResult(BaseModel):
    """What a fulfillment flow did, for the request's outcome and the requester's notification.

    `changed` means as `Change.changed` does: something was made, so never in a dry run,
    whose plan is in `hosts` (the changes `planned`).
    """

    summary: str
    changed: bool
    dry_run: bool = False
    hosts: list[Change] = Field(default_factory=list, description="Each host's change.")
    attachments: list[Attachment] = Field(default_factory=list)


class FulfillmentError(PermanentError):
    """A fulfillment cannot proceed; the message names the input or host and the cause."""


def service_on_host(estate: Estate, service: str, host: str) -> tuple[Service, Host]:
    """The service and host a request names, refusing a host the service does not run on."""
    try:
        return estate.service_on(service, host)
    except KeyError as exc:
        raise FulfillmentError(exc.args[0]) from None


def find_service(estate: Estate, service: str) -> Service:
    """The named service, or `FulfillmentError` naming the input."""
    try:
        return estate.service(service)
    except KeyError:
        raise FulfillmentError(f"service: no service {service!r} in the estate") from None


def fulfillment_flows() -> dict[str, Any]:
    """Every fulfillment flow a catalog item may name, by name."""
    from opsflow.flows.fulfillment import (
        clear_old_logs,
        create_app_account,
        declared_runbook,
        diagnostic_bundle,
        request_service_restart,
    )

    return {
        "request-service-restart": request_service_restart.request_service_restart,
        "clear-old-logs": clear_old_logs.clear_old_logs,
        "diagnostic-bundle": diagnostic_bundle.diagnostic_bundle,
        "create-app-account": create_app_account.create_app_account,
        "run-declared-runbook": declared_runbook.run_declared_runbook,
    }
