"""prefect.yaml served for real, and `opsflow run` following a deployment's run to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from opsflow.cli.main import app
from opsflow.runtime.project import read_deployments
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def served(prefect_server, ssh_credentials, lab, opsflow_home, lab_desk):
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "OPSFLOW_INVENTORY": str(lab.estate_dir),
        "OPSFLOW_HOME": str(opsflow_home),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "opsflow.runtime.serve"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = {spec.name for spec in read_deployments()}

    def registered() -> bool:
        with get_client(sync_client=True) as client:
            return names <= {d.name for d in client.read_deployments()}

    wait_for(registered, 90, "every deployment of prefect.yaml to be served")
    yield
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def test_every_deployment_has_its_schedule_and_tags(served) -> None:
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    for spec in read_deployments():
        deployment = deployments[spec.name]
        assert set(spec.tags) <= set(deployment.tags)
        # Every deployment belongs to an ITIL process, but the one paging about their
        # failures: tagged itil:*, its own failure would page again.
        paging = "opsflow:paging" in deployment.tags and bool(spec.triggers)
        assert paging or any(tag.startswith("itil:") for tag in deployment.tags), spec.name
        crons = sorted(s.schedule.cron for s in deployment.schedules)
        assert crons == sorted(s.cron for s in spec.schedules)
        assert all(s.schedule.timezone for s in deployment.schedules)


def test_opsflow_run_health_check(served, lab) -> None:
    result = CliRunner().invoke(app, ["run", "health-check", "--json"])
    assert result.exit_code == 0, result.output
    assert "Completed" in result.stderr, "the progress goes to stderr"
    rows = json.loads(result.stdout)  # stdout holds the JSON alone
    assert [(r["host"], r["service"], r["healthy"]) for r in rows] == [
        (host.name, "app", True) for host in lab.hosts
    ]
