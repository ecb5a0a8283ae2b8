"""runbooks.yaml loads with the estate; a malformed runbook is refused naming file, runbook and
step; placeholders stay values wherever they land."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsflow.errors import InventoryError
from opsflow.inventory.loader import load_estate
from opsflow.inventory.templates import render_url
from opsflow.lab.runbooks import RUNBOOKS_YAML


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def estate_dir(directory: Path, key: str, runbooks: Any, catalog: Any = None) -> Path:
    host = {"name": "web1", "address": "127.0.0.1", "port": 2200, "host_key": key}
    (directory / "hosts.yaml").write_text(yaml.safe_dump({"hosts": [{**host, "groups": ["web"]}]}))
    service = {"name": "app", "group": "web", "health_check": {"kind": "http", "port": 8080}}
    (directory / "services.yaml").write_text(yaml.safe_dump({"services": [service]}))
    text = runbooks if isinstance(runbooks, str) else yaml.safe_dump({"runbooks": runbooks})
    (directory / "runbooks.yaml").write_text(text)
    if catalog is not None:
        (directory / "catalog.yaml").write_text(yaml.safe_dump({"catalog": catalog}))
    return directory


def refused(directory: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_estate(directory)
    return caught.value.problems


def runbook(**steps: Any) -> dict[str, Any]:
    return {
        "name": "fix-app",
        "parameters": [{"name": "note", "type": "string", "default": "ok"}],
        "remediate": [{"name": "start", "command": ["/usr/bin/svc", "start"]}],
        **steps,
    }


def test_the_shipped_names_are_the_runbooks_opsflow_ships() -> None:
    from opsflow.flows.runbooks import runbooks
    from opsflow.inventory.runbooks import SHIPPED_RUNBOOKS

    assert set(runbooks()) == SHIPPED_RUNBOOKS


def test_the_lab_runbook_loads_and_counts_as_a_runbook(tmp_path: Path, host_key: str) -> None:
    estate = load_estate(estate_dir(tmp_path, host_key, RUNBOOKS_YAML))
    [declared] = estate.runbooks
    assert declared.name == "put-app-back-in-service"
    assert {"put-app-back-in-service", "restart-service"} <= estate.runbook_names
    [start, back] = declared.remediate
    assert start.command == ["/var/lib/app/bin/svc", "start"] and start.rollback[0].name == "stop"
    assert back.http is not None and back.http.method == "PUT" and back.http.retry_count == 2
    assert declared.diagnose[0].expect_exit == [0, 3]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            {"remediate": [{"name": "restart", "http": {"method": "FETCH", "url": "http://x/"}}]},
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (restart): http.method: Input "
            "should be 'GET', 'HEAD', 'POST', 'PUT', 'PATCH' or 'DELETE'",
            id="bad-method",
        ),
        pytest.param(
            {"remediate": [{"name": "start", "command": "svc start; rm -rf /"}]},
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (start): command: Input should "
            "be a valid list",
            id="shell-string-command",
        ),
        pytest.param(
            {"diagnose": [{"name": "look"}]},
            "runbooks.yaml: runbooks[0] (fix-app): diagnose[0] (look): a step is exactly one of "
            "command, http, deployment (found: none)",
            id="no-kind",
        ),
        pytest.param(
            {
                "remediate": [
                    {
                        "name": "drain",
                        "http": {"method": "POST", "url": "http://{params.note}:80/drain"},
                    }
                ]
            },
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (drain): http.url: "
            "{params.note} in the host or port: only {host.address}, {host.name}, "
            "{service.port} may be there",
            id="parameter-picks-the-server",
        ),
        pytest.param(
            {
                "remediate": [
                    {
                        "name": "drain",
                        "http": {"method": "POST", "url": "http://{host.address}/d", "retries": 2},
                    }
                ]
            },
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (drain): http: retries: a POST "
            "is not idempotent, so it is never retried (set idempotent: true if sending it "
            "twice is safe)",
            id="retried-post",
        ),
        pytest.param(
            {"verify": [{"name": "touch", "command": ["touch", "/x"], "changes": True}]},
            "runbooks.yaml: runbooks[0] (fix-app): verify[0] (touch): changes: a verify step "
            "must not change the host",
            id="changing-verify",
        ),
        pytest.param(
            {"remediate": [{"name": "say", "command": ["echo", "{params.nope}"]}]},
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (say): command[1]: "
            "{params.nope} names no parameter of the runbook (its parameters: note)",
            id="unknown-parameter",
        ),
        pytest.param(
            {"remediate": [{"name": "say", "command": ["echo", "{host.password}"]}]},
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (say): command[1]: unknown "
            "placeholder {host.password}",
            id="unknown-placeholder",
        ),
        pytest.param(
            {"remediate": [{"name": "deploy", "deployment": {"name": "no-slash"}}]},
            "runbooks.yaml: runbooks[0] (fix-app): remediate[0] (deploy): deployment.name: "
            "String should match pattern",
            id="bad-deployment-name",
        ),
    ],
)
def test_a_malformed_runbook_is_refused_naming_file_runbook_and_step(
    tmp_path: Path, host_key: str, steps: dict[str, Any], expected: str
) -> None:
    found = refused(estate_dir(tmp_path, host_key, [runbook(**steps)]))
    assert any(p.startswith(expected) for p in found), found


def test_a_runbook_may_not_take_a_shipped_name_or_be_declared_twice(
    tmp_path: Path, host_key: str
) -> None:
    found = refused(
        estate_dir(tmp_path, host_key, [runbook(name="restart-service"), runbook(), runbook()])
    )
    assert "runbooks.yaml: restart-service: name: opsflow ships a runbook of that name" in found
    assert "runbooks.yaml: runbook 'fix-app' is defined 2 times" in found


def test_a_catalog_item_gives_its_runbook_a_host_a_service_and_its_parameters(
    tmp_path: Path, host_key: str
) -> None:
    strict = runbook(parameters=[{"name": "note", "type": "string"}])

    def item(name: str, inputs: list[dict[str, Any]], runbook_name: str = "fix-app") -> dict:
        return {
            "name": name,
            "description": "d",
            "inputs": inputs,
            "fulfillment": {"runbook": runbook_name},
        }

    service = {"name": "service", "type": "service"}
    host = {"name": "host", "type": "host"}
    note = {"name": "note", "type": "string"}
    catalog = [
        item("good", [service, host, note]),
        item("no-host", [service, note]),
        item("extra", [service, host, note, {"name": "colour", "type": "string"}]),
        item("no-note", [service, host]),
        item("no-runbook", [service, host], "fix-the-app"),
        {"name": "both", "description": "d", "fulfillment": {"flow": "x", "runbook": "fix-app"}},
    ]
    found = refused(estate_dir(tmp_path, host_key, [strict], catalog))
    where = "catalog.yaml: {}: fulfillment.runbook: "
    assert sorted(found) == sorted(
        [
            where.format("no-host") + "the item gives no 'host' input or parameter",
            where.format("extra") + "fix-app takes no parameter 'colour'",
            where.format("no-note")
            + "fix-app's parameter 'note' has no default and the item gives no input of that name",
            where.format("no-runbook") + "no runbook 'fix-the-app' in runbooks.yaml",
            "catalog.yaml: catalog[5] (both): fulfillment: name exactly one of flow, runbook, "
            "deployment (found: flow, runbook)",
        ]
    )


def test_parameters_are_checked_by_type() -> None:
    from opsflow.inventory.runbooks import DeclaredRunbook

    declared = DeclaredRunbook.model_validate(
        runbook(
            parameters=[
                {"name": "days", "type": "integer", "minimum": 1, "maximum": 30},
                {"name": "dir", "type": "path", "under": "/var/log"},
                {"name": "mode", "type": "choice", "choices": ["soft", "hard"], "default": "soft"},
            ]
        )
    )
    assert declared.parameter_values({"days": "7", "dir": "/var/log/app"}) == {
        "days": "7",
        "dir": "/var/log/app",
        "mode": "soft",
    }
    with pytest.raises(ValueError) as caught:
        declared.parameter_values({"days": 0, "dir": "/var/log/../../etc", "mode": "x", "y": 1})
    assert str(caught.value).split("; ") == [
        "params.y: not a parameter of fix-app",
        "params.days: 0 is below the minimum 1",
        "params.dir: '/var/log/../../etc' is not an absolute, normalised path (no '..')",
        "params.mode: 'x' is not one of soft, hard",
    ]


def test_a_value_in_a_url_stays_one_component() -> None:
    url = render_url(
        "http://{host.address}:{service.port}/notes/{params.note}?by={params.note}",
        {"host.address": "::1", "service.port": "8080", "params.note": "a/../b?c=d&e#f g"},
    )
    assert (
        url
        == "http://[::1]:8080/notes/a%2F..%2Fb%3Fc%3Dd%26e%23f%20g?by=a%2F..%2Fb%3Fc%3Dd%26e%23f%20g"
    )
