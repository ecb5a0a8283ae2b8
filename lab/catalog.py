"""The lab's service catalog: six real items, from a standard restart to an approved account,
a runbook of the estate's runbooks.yaml and a Prefect deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REQUESTERS = {"roles": ["requester", "operator", "approver"]}
APPROVERS = {"roles": ["approver"]}
USERNAME_PATTERN = r"[a-z_][a-z0-9_-]{0,31}"


def lab_catalog(approval_timeout_minutes: float = 60) -> list[dict[str, Any]]:
    """The catalog items, as catalog.yaml holds them.

    Args:
        approval_timeout_minutes: how long an item needing approval waits for a decision.
    """

    def one_approver(on_timeout: str) -> dict[str, Any]:
        return {
            "policy": "one",
            "approvers": APPROVERS,
            "timeout_minutes": approval_timeout_minutes,
            "on_timeout": on_timeout,
        }

    return [
        {
            "name": "request-service-restart",
            "description": "Restart a service on one of its hosts and check its health after.",
            "inputs": [
                {"name": "service", "type": "service", "description": "The service."},
                {"name": "host", "type": "host", "description": "One of the service's hosts."},
            ],
            "requesters": REQUESTERS,
            "approval": {"policy": "none"},
            "fulfillment": {"flow": "request-service-restart"},
            "fulfill_within_minutes": 5,
        },
        {
            "name": "clear-old-logs",
            "description": "Delete a service's rotated logs older than N days on all its hosts.",
            "inputs": [
                {"name": "service", "type": "service", "description": "The service."},
                {
                    "name": "older_than_days",
                    "type": "integer",
                    "description": "Age in days; default: the service's log policy.",
                    "required": False,
                    "minimum": 1,
                    "maximum": 365,
                },
            ],
            "requesters": REQUESTERS,
            "approval": one_approver("reject"),
            "fulfillment": {"flow": "clear-old-logs"},
            "fulfill_within_minutes": 10,
        },
        {
            "name": "diagnostic-bundle",
            "description": "Collect a host's app logs, app config, processes and disk usage "
            "into an archive attached to the request, checksummed on both ends.",
            "inputs": [{"name": "host", "type": "host", "description": "The host."}],
            "requesters": REQUESTERS,
            "approval": one_approver("reject"),
            "fulfillment": {"flow": "diagnostic-bundle"},
            "fulfill_within_minutes": 10,
        },
        {
            "name": "create-app-account",
            "description": "Create an application account (system, no login) on every host "
            "of a service.",
            "inputs": [
                {"name": "service", "type": "service", "description": "The service."},
                {
                    "name": "username",
                    "type": "string",
                    "description": "A POSIX account name.",
                    "pattern": USERNAME_PATTERN,
                    "max_length": 32,
                },
            ],
            "requesters": REQUESTERS,
            "approval": one_approver("escalate"),
            "fulfillment": {"flow": "create-app-account"},
            "fulfill_within_minutes": 10,
        },
        {
            "name": "put-app-back-in-service",
            "description": "Start the app on a host if it is not running and put it back in "
            "service through its admin API (the runbook of the estate's runbooks.yaml).",
            "inputs": [
                {"name": "service", "type": "service", "description": "The service."},
                {"name": "host", "type": "host", "description": "One of the service's hosts."},
                {
                    "name": "reason",
                    "type": "string",
                    "description": "Why, kept by the app with its state.",
                    "required": False,
                    "pattern": r"[A-Za-z0-9 .,:()-]+",
                    "max_length": 200,
                },
            ],
            "requesters": {"roles": ["operator"]},
            "approval": {"policy": "none"},
            "fulfillment": {"runbook": "put-app-back-in-service"},
            "fulfill_within_minutes": 5,
        },
        {
            "name": "patch-report-now",
            "description": "Run the patch report now, on every host (any deployment can "
            "fulfill an item).",
            "requesters": {"roles": ["operator"]},
            "approval": {"policy": "none"},
            "fulfillment": {"deployment": "patch-report/patch-report"},
            "fulfill_within_minutes": 5,
        },
    ]


def write_catalog(estate_dir: Path, approval_timeout_minutes: float = 60) -> Path:
    """Write the lab's catalog.yaml into `estate_dir`; returns its path."""
    path = Path(estate_dir) / "catalog.yaml"
    catalog = lab_catalog(approval_timeout_minutes)
    path.write_text(yaml.safe_dump({"catalog": catalog}, sort_keys=False))
    return path
