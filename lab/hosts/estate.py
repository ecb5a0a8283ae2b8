"""The estate a lab writes for its hosts (settings, hosts, the app service, pinned host keys,
people, catalog, entitlements, runbooks): what `inventory.loader.load_estate` reads to reach them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from opsflow.lab.catalog import write_catalog
from opsflow.lab.entitlements import write_entitlements
from opsflow.lab.hosts.plan import APP_PORT, SSH_PORT, Plan
from opsflow.lab.hosts.run import SVC
from opsflow.lab.people import write_people_and_rules
from opsflow.lab.runbooks import SYMPTOMS, write_runbooks

CREDENTIALS = "opsflow-lab"


def write_estate(estate_dir: Path, plans: list[Plan], host_keys: dict[str, str]) -> None:
    """Write the estate `inventory.loader.load_estate` reads: settings, hosts, service, keys."""
    estate_dir.mkdir(parents=True, exist_ok=True)
    (estate_dir / "estate.yaml").write_text(
        yaml.safe_dump({"name": "lab", "known_hosts": "known_hosts"}, sort_keys=False)
    )
    (estate_dir / "known_hosts").write_text(
        "".join(
            f"{p.name},[{p.address}]:{SSH_PORT} {' '.join(host_keys[p.name].split()[:2])}\n"
            for p in plans
        )
    )
    hosts = [
        {
            "name": p.name,
            "address": p.address,
            "port": SSH_PORT,
            "user": "root",
            "credentials": CREDENTIALS,
            "groups": list(p.groups),
            "labels": {"lab": "true"},
        }
        for p in plans
    ]
    (estate_dir / "hosts.yaml").write_text(yaml.safe_dump({"hosts": hosts}, sort_keys=False))
    service = {
        "name": "app",
        "description": "The lab's demo HTTP service (/health, /metrics) on every lab host.",
        "group": "lab",
        "health_check": {"kind": "http", "port": APP_PORT, "path": "/health"},
        "control": {
            "start": [SVC, "start"],
            "stop": [SVC, "stop"],
            "status": [SVC, "status"],
            "restart": [SVC, "restart"],
        },
        "log_dir": "/var/log/app",
        "owner_team": "ops",
        "impact": 2,
        "runbooks": {
            "service-down": "restart-service",
            "disk-full": "free-disk-space",
            "service-hung": "recover-hung-service",
            **SYMPTOMS,
        },
    }
    (estate_dir / "services.yaml").write_text(
        yaml.safe_dump({"services": [service]}, sort_keys=False)
    )
    write_people_and_rules(estate_dir, estate_dir.parent)
    write_catalog(estate_dir)
    write_entitlements(estate_dir)
    write_runbooks(estate_dir)
