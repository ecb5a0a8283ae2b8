"""The lab app's admin API on real lab hosts: only for its token, idempotent, and `drain`
takes the app out of service so /health answers 503 until something puts it back."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from opsflow.errors import LabError
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.probes import app_health, set_app_state
from opsflow.lab.hosts.run import run_on_host
from opsflow.lab.hosts.state import app_admin_token_file


def call(host: Any, method: str, token: str | None, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host.address, host.app_port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        conn.request(method, "/admin/state", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def health_status(host: Any) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host.address, host.app_port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_admin_api_answers_only_its_token(lab) -> None:
    host = lab.hosts[0]
    token = app_admin_token_file(lab.directory).read_text().strip()
    assert call(host, "GET", None)[0] == 401
    assert call(host, "GET", token + "x")[0] == 401
    assert call(host, "PUT", "", b'{"state": "out-of-service"}')[0] == 401
    assert call(host, "GET", token) == (200, {"state": "serving", "reason": ""})
    assert call(host, "PUT", token, b'{"state": "gone"}')[0] == 400
    assert call(host, "PUT", token, b"not json")[0] == 400
    assert app_health(host.address, timeout=2) is not None


def test_the_token_is_root_only_and_outside_the_apps_config(lab) -> None:
    host = lab.hosts[0]
    token = app_admin_token_file(lab.directory).read_text().strip()
    found = run_on_host(host.name, ["grep", "-rl", token, "/etc/app"], lab.directory)
    assert found.returncode == 1, f"the token is in {found.stdout}: a diagnostic bundle takes it"
    mode = run_on_host(host.name, ["stat", "-c", "%a %U", "/etc/app-admin/token"], lab.directory)
    assert mode.stdout.split() == ["600", "root"]


def test_drain_takes_the_app_out_of_service_until_it_is_put_back(lab) -> None:
    host, other = lab.hosts[1], lab.hosts[2]
    token = app_admin_token_file(lab.directory).read_text().strip()
    try:
        assert "took the app out of service" in break_host(host.name, "drain", lab.directory)
        assert "found the app out of service" in break_host(host.name, "drain", lab.directory)
        status, answer = health_status(host)
        assert status == 503
        assert answer["error"] == "out of service: drained by opsflow lab break"
        assert health_status(other)[0] == 200
    finally:
        put_back = set_app_state(host.address, token, "serving")
    assert put_back == {"state": "serving", "reason": "", "changed": True}
    assert set_app_state(host.address, token, "serving")["changed"] is False
    assert health_status(host)[0] == 200


def test_drain_says_why_when_the_app_does_not_answer(lab) -> None:
    host = lab.hosts[3]
    run_on_host(host.name, ["/var/lib/app/bin/svc", "stop"], lab.directory)
    try:
        with pytest.raises(LabError, match="admin API does not answer"):
            break_host(host.name, "drain", lab.directory)
    finally:
        assert (
            run_on_host(host.name, ["/var/lib/app/bin/svc", "start"], lab.directory).returncode == 0
        )
