"""opsflow's rules on itself: valid for promtool, and each alert fires on its condition only,
labelled for the on-call route (promtool's rule unit tests, over synthetic series)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from opsflow.monitoring import SELF_SOURCE, rules_path

DESK = {"job": "opsflow-desk", "instance": "127.0.0.1:8765"}
WORKER = {"job": "opsflow-worker", "instance": "127.0.0.1:8766"}


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def _fires(
    at: str, alert: str, labels: dict[str, str], severity: str, summary: str
) -> dict[str, Any]:
    expected = {"exp_labels": {**labels, "severity": severity, "source": SELF_SOURCE}}
    expected["exp_annotations"] = {"summary": summary}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [expected]}


def _quiet(at: str, alert: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def _promtool(*argv: str, cwd: Path) -> None:
    result = subprocess.run(
        ["promtool", *argv], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_rules_are_valid(tmp_path: Path) -> None:
    _promtool("check", "rules", str(rules_path()), cwd=tmp_path)
    groups = yaml.safe_load(rules_path().read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"]]
    assert alerts and all(rule["labels"]["source"] == SELF_SOURCE for rule in alerts)


def test_each_alert_fires_on_its_condition(tmp_path: Path) -> None:
    """Scraped every 15 s: each series goes from healthy to the condition and back."""
    series = [
        _series("up", DESK, "1 1 0x8 1"),
        _series("up", WORKER, "1x10"),
        _series("opsflow_records_readable", DESK, "1 0x6 1"),
        # Two desks report the same records: the backlog alert must fire once.
        _series("opsflow_triage_oldest_pending_seconds", DESK, "0 0 30 45 60 75 90 0"),
        _series(
            "opsflow_triage_oldest_pending_seconds",
            {**DESK, "instance": "b:1"},
            "0 0 30 45 60 75 90 0",
        ),
        _series("opsflow_events_failed", DESK, "0 2x25 0"),
        _series("opsflow_restorations_total", {**WORKER, "outcome": "escalated"}, "0 1 2 3 3 3"),
        _series("opsflow_restorations_total", {**WORKER, "outcome": "resolved"}, "0+5x10"),
        _series(
            "opsflow_incidents_sla_breached",
            {**DESK, "priority": "P1", "target": "response"},
            "0 1 1 0",
        ),
        _series(
            "opsflow_incidents_sla_breached",
            {**DESK, "priority": "P2", "target": "resolution"},
            "0x3",
        ),
        _series(
            "opsflow_approvals_oldest_waiting_seconds",
            {**DESK, "kind": "request"},
            "86000 86390 86405 0",
        ),
        _series("opsflow_approvals_oldest_waiting_seconds", {**DESK, "kind": "access"}, "0x3"),
    ]
    checks = [
        _quiet("1m", "OpsflowProcessDown"),  # down since 30 s: not yet
        _fires(
            "1m30s",
            "OpsflowProcessDown",
            DESK,
            "critical",
            "opsflow's opsflow-desk at 127.0.0.1:8765 does not answer its scrape",
        ),
        _quiet("3m", "OpsflowProcessDown"),
        _quiet("30s", "OpsflowRecordsUnreadable"),
        _fires(
            "1m15s",
            "OpsflowRecordsUnreadable",
            DESK,
            "critical",
            "the desk at 127.0.0.1:8765 cannot read opsflow's records (its log says why)",
        ),
        _quiet("1m", "OpsflowTriageBacklog"),  # 60 s old: not over
        _fires(
            "1m15s",
            "OpsflowTriageBacklog",
            {},
            "critical",
            "an event has waited 1m 15s for triage: no opsflow worker is triaging",
        ),
        _quiet("1m45s", "OpsflowTriageBacklog"),
        _quiet("4m", "OpsflowEventsFailed"),
        _fires(
            "5m15s",
            "OpsflowEventsFailed",
            {},
            "warning",
            "2 events failed triage: `opsflow event failed` says why, "
            "`opsflow event retry` once mended",
        ),
        _quiet("15s", "OpsflowRestorationsFailing"),
        _fires(
            "45s",
            "OpsflowRestorationsFailing",
            {},
            "warning",
            "3 restorations escalated or failed in the last 30 minutes",
        ),
        _fires(
            "15s",
            "OpsflowSlaBreached",
            {"priority": "P1", "target": "response"},
            "warning",
            "1 open P1 incidents are past their response target",
        ),
        _quiet("45s", "OpsflowSlaBreached"),
        _quiet("15s", "OpsflowApprovalsStale"),
        _fires(
            "30s",
            "OpsflowApprovalsStale",
            {"kind": "request"},
            "warning",
            "a request has waited 1d 0h 0m 5s for an approver",
        ),
        _quiet("45s", "OpsflowApprovalsStale"),
    ]
    tests = {
        "rule_files": [str(rules_path())],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "alert_rule_test": checks}],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    _promtool("test", "rules", "tests.yml", cwd=tmp_path)
