"""What opsflow ships for the Prometheus that watches opsflow: alert rules on itself.

`opsflow-rules.yml` alerts on opsflow's own backlog, failed events, failing restorations,
SLA breaches and stale approvals; each alert carries `source="opsflow-self"` so that
Alertmanager routes it to the on-call, not back into opsflow.
"""

from __future__ import annotations

from pathlib import Path

SELF_SOURCE = "opsflow-self"
"""The `source` label of every alert of the rules file."""


def rules_path() -> Path:
    """Where the installed rules file is, for a Prometheus's `rule_files`."""
    return Path(__file__).with_name("opsflow-rules.yml")
