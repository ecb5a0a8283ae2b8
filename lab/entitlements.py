"""The lab's access entitlements: login to the web hosts, sudo on the db hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ENTITLEMENTS: list[dict[str, Any]] = [
    {
        "name": "web-login",
        "description": "Log in to the web hosts (odd lab hosts) with your own key.",
        "group": "web",
        "privilege": "login",
        "requesters": {"roles": ["requester"]},
        "approvers": {"roles": ["approver"]},
        "max_duration_hours": 8,
    },
    {
        "name": "db-sudo",
        "description": "Log in to the db hosts (even lab hosts) and run anything with sudo.",
        "group": "db",
        "privilege": "sudo",
        "requesters": {"teams": ["ops"]},
        "approvers": {"roles": ["approver"]},
        "max_duration_hours": 2,
    },
]


def write_entitlements(estate_dir: Path) -> Path:
    """Write the lab's entitlements.yaml into `estate_dir` and return its path."""
    path = Path(estate_dir) / "entitlements.yaml"
    path.write_text(yaml.safe_dump({"entitlements": ENTITLEMENTS}, sort_keys=False))
    return path
