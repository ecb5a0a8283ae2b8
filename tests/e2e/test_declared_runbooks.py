"""Runbooks declared in the estate, run on real lab hosts: restoring a broken service over
the app's admin API, rolled back when they do not restore, running a served deployment, fed
values that reach the host literally; and the README's "Write a runbook" as written."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import requests
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from opsflow.cli.main import app
from opsflow.itsm.records import IncidentCreate
from opsflow.itsm.store.records import open_records
from opsflow.lab.catalog import lab_catalog
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.probes import set_app_state
from opsflow.lab.hosts.run import run_on_host
from opsflow.lab.hosts.state import app_admin_token_file
from opsflow.lab.people import token_file
from opsflow.lab.runbooks import ADMIN_CREDENTIALS, RUNBOOKS_YAML
from tests.support import PROJECT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

RESTORE_TIMEOUT_S = 90
EVIL = "a b; touch injected $(touch injected2) `id` 'q' \"dq\" | & > < * ~ \\ #"
"""A note full of what a shell would act on: it must become one file name, nothing else."""


@pytest.fixture(scope="module")
def app_admin(lab, ssh_credentials) -> str:
    """The lab apps' admin token as the HTTP credentials block its runbook names."""
    from opsflow.blocks.registration import save_http_credentials

    token = app_admin_token_file(lab.directory).read_text().strip()
    save_http_credentials(ADMIN_CREDENTIALS, token)
    return token


@pytest.fixture(scope="module")
def served_patch_report(prefect_server, ssh_credentials, lab, opsflow_home) -> Iterator[None]:
    """The `patch-report` flow served as the deployment `patch-report/patch-report`, as `make
    up` serves it, from a process of its own."""
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "OPSFLOW_INVENTORY": str(lab.estate_dir),
        "OPSFLOW_HOME": str(opsflow_home),
    }
    serve = (
        "from prefect import serve\n"
        "from opsflow.runtime.project import read_deployments, to_runner_deployment\n"
        "[spec] = [s for s in read_deployments() if s.name == 'patch-report']\n"
        "serve(to_runner_deployment(spec), print_starting_message=False)"
    )
    log = opsflow_home / "served-patch-report.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", serve],
            cwd=PROJECT,
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def registered() -> bool:
        assert process.poll() is None, log.read_text()
        with get_client(sync_client=True) as client:
            return "patch-report" in {d.name for d in client.read_deployments()}

    wait_for(registered, 90, "patch-report/patch-report to be served")
    yield
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


@pytest.fixture
def more_runbooks(lab, lab_desk) -> Iterator[None]:
    """The lab estate with two more declared runbooks and a catalog item naming one; put back
    after the test."""
    runbooks_path: Path = lab.estate_dir / "runbooks.yaml"
    catalog_path: Path = lab.estate_dir / "catalog.yaml"
    originals = {p: p.read_text() for p in (runbooks_path, catalog_path)}
    declared = yaml.safe_load(originals[runbooks_path])
    declared["runbooks"] += [
        {
            "name": "leave-a-note",
            "description": "Leave a note file on the host, named by the request.",
            "parameters": [{"name": "note", "type": "string", "max_length": 120}],
            "remediate": [
                {"name": "write", "command": ["touch", "--", "/var/lib/app/note-{params.note}"]}
            ],
        },
        {
            "name": "report-then-start",
            "description": "Runs the patch report deployment for the host, then starts the app.",
            "diagnose": [
                {
                    "name": "patch-report",
                    "deployment": {
                        "name": "patch-report/patch-report",
                        "parameters": {"hosts": ["{host}"]},
                    },
                    "timeout_s": 120,
                }
            ],
            "remediate": [{"name": "start", "command": ["/var/lib/app/bin/svc", "start"]}],
        },
        {
            "name": "take-out-and-fail",
            "description": "Takes the app out of service, so verification must fail.",
            "remediate": [
                {
                    "name": "out",
                    "http": {
                        "method": "PUT",
                        "url": "http://{host.address}:{service.port}/admin/state",
                        "body": {"state": "out-of-service", "reason": "{reference}"},
                        "credentials": ADMIN_CREDENTIALS,
                    },
                    "rollback": [
                        {
                            "name": "back",
                            "http": {
                                "method": "PUT",
                                "url": "http://{host.address}:{service.port}/admin/state",
                                "body": {"state": "serving"},
                                "credentials": ADMIN_CREDENTIALS,
                            },
                        }
                    ],
                }
            ],
        },
    ]
    runbooks_path.write_text(yaml.safe_dump(declared, sort_keys=False))
    catalog = yaml.safe_load(originals[catalog_path])
    catalog["catalog"].append(
        {
            "name": "leave-a-note",
            "description": "Leave a note on a host of a service.",
            "inputs": [
                {"name": "service", "type": "service"},
                {"name": "host", "type": "host"},
                {"name": "note", "type": "string", "max_length": 120},
            ],
            "requesters": {"roles": ["requester"]},
            "fulfillment": {"runbook": "leave-a-note"},
            "fulfill_within_minutes": 2,
        }
    )
    catalog_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    yield
    for path, text in originals.items():
        path.write_text(text)


def admin_state(lab, host: str, token: str) -> dict[str, Any]:
    address = lab.host(host).address
    conn = http.client.HTTPConnection(address, lab.host(host).app_port, timeout=5)
    try:
        conn.request("GET", "/admin/state", headers={"Authorization": f"Bearer {token}"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def health_status(lab, host: str) -> int:
    conn = http.client.HTTPConnection(lab.host(host).address, lab.host(host).app_port, timeout=5)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def task_run_names(number: str) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"restore-{number}"]))
        )
    return [run.name for run in runs]


def open_incident(host: str, runbook: str, symptom: str = "slow"):
    incident, _ = open_records().correlation.open_or_correlate(
        IncidentCreate(
            host=host,
            service="app",
            symptom=symptom,
            summary=f"app {symptom}",
            impact=2,
            urgency=2,
            runbook=runbook,
            assignment_group="ops",
            correlation_key=f"{host}/app/{uuid4().hex}",
        ),
        datetime.now(UTC),
        actor="test",
    )
    return incident


def test_a_declared_runbook_restores_an_app_out_of_service_over_its_admin_api(
    lab, lab_desk, app_admin: str
) -> None:
    host = "lab03"
    break_host(host, "drain", lab.directory)
    assert health_status(lab, host) == 503
    sent = requests.post(
        f"{lab_desk.url}/api/v1/events",
        headers={"Authorization": f"Bearer {token_file(lab.directory, 'alice').read_text()}"},
        json={
            "source": "e2e",
            "host": host,
            "service": "app",
            "severity": "critical",
            "summary": f"app on {host} answers 503",
            "labels": {"symptom": "out-of-service", "run": uuid4().hex},
        },
        timeout=30,
    )
    assert sent.status_code == 202, sent.text

    def resolved():
        found = [
            i
            for i in open_records().incidents.list(host=host, service="app")
            if i.symptom == "out-of-service" and i.state == "Resolved"
        ]
        return found[0] if found else None

    incident = wait_for(resolved, RESTORE_TIMEOUT_S, f"the out-of-service incident on {host}")
    assert health_status(lab, host) == 200
    assert incident.runbook == "put-app-back-in-service"
    assert incident.resolution_code == "auto-remediated"
    state = admin_state(lab, host, app_admin)
    assert state["state"] == "serving"
    worklog = [w.text for w in open_records().worklog.entries(incident.id)]
    assert f"runbook put-app-back-in-service started on {host}" in worklog
    [diagnosis] = [t for t in worklog if t.startswith("diagnosis: ")]
    assert "admin-state:" in diagnosis and "out-of-service" in diagnosis, diagnosis
    [remediation] = [t for t in worklog if t.startswith("remediation: ")]
    assert f"PUT http://{lab.host(host).address}:18080/admin/state: 200" in remediation
    assert any(t.startswith("verified: GET ") and "running: ran " in t for t in worklog), worklog
    names = task_run_names(incident.number)
    assert any(n.startswith("call_http_step[put-app-back-in-service: remediate[1]") for n in names)
    assert any(n.startswith("run_command_step[put-app-back-in-service: diagnose[0]") for n in names)
    assert app_admin not in json.dumps(worklog) + (incident.resolution_notes or "")


def test_a_declared_runbook_that_does_not_restore_is_rolled_back_and_escalated(
    lab, lab_desk, app_admin: str, more_runbooks: None, pager
) -> None:
    from opsflow.flows.incident_restoration import incident_restoration

    host = "lab04"
    incident = open_incident(host, "take-out-and-fail")
    try:
        assert incident_restoration(incident.number, verify_deadline_s=1) == "In Progress"
        assert admin_state(lab, host, app_admin)["state"] == "serving", "not rolled back"
        assert health_status(lab, host) == 200
    finally:
        set_app_state(lab.host(host).address, app_admin, "serving")
    entries = open_records().worklog.entries(incident.id)
    rollbacks = [w.text for w in entries if w.author == "rollback"]
    assert rollbacks == [
        f"take-out-and-fail: remediate[0] (out) rollback[0] (back) on {host}: "
        f"PUT http://{lab.host(host).address}:18080/admin/state: 200"
    ]
    assert open_records().incidents.get(incident.id).assigned_to == "alice"


def test_a_parameter_with_shell_metacharacters_reaches_the_host_literally(
    lab, lab_desk, more_runbooks: None
) -> None:
    host = "lab02"
    carol = {"Authorization": f"Bearer {token_file(lab.directory, 'carol').read_text()}"}
    answer = requests.post(
        f"{lab_desk.url}/api/v1/requests",
        headers=carol,
        json={"item": "leave-a-note", "inputs": {"service": "app", "host": host, "note": EVIL}},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    number = answer.json()["number"]
    alice = {"Authorization": f"Bearer {token_file(lab.directory, 'alice').read_text()}"}

    def done():
        record = requests.get(
            f"{lab_desk.url}/api/v1/requests/{number}", headers=alice, timeout=30
        ).json()
        return record if record["state"] in ("fulfilled", "failed") else None

    try:
        record = wait_for(done, RESTORE_TIMEOUT_S, f"{number} to be fulfilled")
        assert record["state"] == "fulfilled", record["outcome"]
        listed = run_on_host(host, ["ls", "-1A", "/var/lib/app"], lab.directory).stdout
        assert f"note-{EVIL}" in listed.splitlines(), listed
        for cwd in ("/root", "/var/lib/app", "/"):
            found = run_on_host(host, ["ls", "-1A", cwd], lab.directory).stdout.splitlines()
            assert "injected" not in found and "injected2" not in found, f"a shell ran in {cwd}"
    finally:
        run_on_host(host, ["rm", "-f", "--", f"/var/lib/app/note-{EVIL}"], lab.directory)


def test_a_declared_runbook_runs_a_deployment_and_waits_for_it(
    lab, lab_desk, more_runbooks: None, served_patch_report: None
) -> None:
    from opsflow.flows.incident_restoration import incident_restoration

    host = "lab05"
    break_host(host, "service", lab.directory)
    incident = open_incident(host, "report-then-start", "service-down")
    assert incident_restoration(incident.number) == "Resolved"
    assert health_status(lab, host) == 200
    [diagnosis] = [
        w.text for w in open_records().worklog.entries(incident.id) if w.text.startswith("diag")
    ]
    run_name = re.search(r"patch-report: run (\S+)", diagnosis)
    assert run_name, diagnosis
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name.group(1)]))
        )
    assert run.state is not None and run.state.is_completed()
    assert run.parameters == {"hosts": [host]}
    assert run.parent_task_run_id is not None, "the run is not linked to the step's task run"


def readme_section() -> str:
    text = (PROJECT / "README.md").read_text()
    return text.split("\n## Write a runbook\n", 1)[1].split("\n## ", 1)[0]


def readme_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", readme_section(), re.S)


def test_the_readme_declares_the_labs_runbook_and_catalog_items(lab) -> None:
    runbooks, mapping, catalog = readme_blocks("yaml")
    assert runbooks == RUNBOOKS_YAML
    [app_service] = yaml.safe_load((lab.estate_dir / "services.yaml").read_text())["services"]
    assert yaml.safe_load(mapping)["runbooks"].items() <= app_service["runbooks"].items()
    by_name = {item["name"]: item for item in lab_catalog()}
    for item in yaml.safe_load(catalog)["catalog"]:
        assert item == by_name[item["name"]]


def test_try_it_on_the_lab_as_written(
    lab, lab_desk, app_admin: str, served_patch_report: None, monkeypatch
) -> None:
    monkeypatch.setenv("OPSFLOW_TOKEN", token_file(lab.directory, "alice").read_text())
    [commands] = readme_blocks("sh")
    lines = re.sub(r"\\\n\s*", " ", commands).splitlines()
    numbers = []
    for line in lines:
        argv = shlex.split(line, comments=True)
        assert argv[0] == "opsflow", line
        result = CliRunner().invoke(app, argv[1:])
        assert result.exit_code == 0, f"{line}: {result.output}"
        numbers += re.findall(r"REQ\d{7}", result.output) if "submit" in argv else []
    assert len(numbers) == 2

    def resolved():
        found = [
            i
            for i in open_records().incidents.list(host="lab02", service="app")
            if i.symptom == "out-of-service" and i.state == "Resolved"
        ]
        return found[0] if found else None

    wait_for(resolved, RESTORE_TIMEOUT_S, "the out-of-service incident on lab02 to be resolved")
    assert health_status(lab, "lab02") == 200
    for number in numbers:
        record = wait_for(
            lambda n=number: (
                (r := open_records().requests.get(n)).state in ("fulfilled", "failed") and r
            ),
            RESTORE_TIMEOUT_S,
            f"{number} to be fulfilled",
        )
        assert record.state == "fulfilled", record.outcome
    assert admin_state(lab, "lab02", app_admin)["state"] == "serving"
