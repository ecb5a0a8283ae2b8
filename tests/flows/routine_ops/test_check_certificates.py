"""A certificate about to expire on a lab service becomes an incident at the real desk."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from opsflow.flows.routine_ops.check_certificates import check_certificates
from opsflow.itsm.store.records import open_records
from opsflow.lab.hosts.run import run_on_host
from opsflow.lab.people import token_file
from opsflow.tasks.certificates import CertificateFile, TlsEndpoint
from tests.support.prefect_api import latest_artifact
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ssh_credentials")

HOST = "lab03"
TLS_PORT = 18443
TLS_DIR = "/etc/app/tls"


def sh(script: str, *args: str) -> str:
    result = run_on_host(HOST, ["sh", "-c", script, "sh", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_cert(name: str, days: int) -> None:
    """A self-signed certificate valid for `days` days, made with openssl on the host."""
    sh(
        """mkdir -p "$1" && cd "$1"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -days "$3" -subj "/CN=$2" -keyout "$2.key" -out "$2.pem" 2>/dev/null""",
        TLS_DIR,
        name,
        str(days),
    )


def serve_tls(address: str, name: str) -> str:
    """Start `openssl s_server` inside the host with certificate `name`; return its pid."""
    pid = sh(
        """cd "$1"
        setsid openssl s_server -quiet -www -accept "$2:$3" -cert "$4.pem" -key "$4.key" \
            </dev/null >/dev/null 2>&1 &
        echo $!""",
        TLS_DIR,
        address,
        str(TLS_PORT),
        name,
    ).strip()

    def answers() -> bool:
        try:
            socket.create_connection((address, TLS_PORT), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_for(answers, 10, f"openssl s_server on {address}:{TLS_PORT}")
    return pid


@pytest.fixture
def tls_service(lab) -> Iterator[str]:
    """lab03's app with a TLS port whose certificate expires in 5 days."""
    address = lab.host(HOST).address
    make_cert("expiring", 5)
    make_cert("renewed", 90)
    make_cert("soon", 20)
    pids = [serve_tls(address, "expiring")]
    yield address, pids
    for pid in pids:
        run_on_host(HOST, ["kill", pid])
    sh('rm -rf -- "$1"', TLS_DIR)


def open_incidents(desk_url: str, token: str) -> list[dict]:
    answer = requests.get(
        f"{desk_url}/api/v1/incidents",
        params={"host": HOST, "service": "app"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    answer.raise_for_status()
    return [i for i in answer.json() if i["symptom"] == "certificate-expiring"]


def test_expiring_certificate_raises_an_incident(tls_service, lab, desk_url: str) -> None:
    address, pids = tls_service
    operator = token_file(lab.directory, "alice").read_text().strip()  # monitors only post
    endpoint = TlsEndpoint(host=HOST, port=TLS_PORT, service="app")
    files = [
        CertificateFile(host=HOST, path=f"{TLS_DIR}/expiring.pem", service="app"),
        CertificateFile(host=HOST, path=f"{TLS_DIR}/soon.pem", service="app"),
    ]
    rows = check_certificates(endpoints=[endpoint], files=files)
    by_target = {r["target"]: r for r in rows}
    assert by_target[f"tls {address}:{TLS_PORT}"]["class"] == "exception"
    assert 4.9 < by_target[f"tls {address}:{TLS_PORT}"]["days_left"] <= 5
    assert by_target[f"file {TLS_DIR}/expiring.pem"]["class"] == "exception"
    assert by_target[f"file {TLS_DIR}/soon.pem"]["class"] == "warning"
    assert [r["class"] for r in latest_artifact("check-certificates")] == [
        "exception",
        "exception",
        "warning",
    ]

    [incident] = wait_for(
        lambda: [i for i in open_incidents(desk_url, operator) if i["state"] == "New"],
        20,
        "the desk to open an incident for the expiring certificate",
    )
    assert incident["host"] == HOST and incident["runbook"] is None
    events = open_records().events.of_incident(incident["id"])
    assert {e.source for e in events} == {"opsflow-certificates"}
    assert len(events) == 2, "the endpoint and the file go to the one incident"
    warning = open_records().events.with_fingerprint(f"certificate/{HOST}/file {TLS_DIR}/soon.pem")
    assert [(e.event_class, e.incident_id) for e in warning] == [("warning", None)]

    # Renewed: the next check sends the all-clear, and triage resolves the incident.
    run_on_host(HOST, ["kill", pids.pop()])
    pids.append(serve_tls(address, "renewed"))
    files[0] = CertificateFile(host=HOST, path=f"{TLS_DIR}/renewed.pem", service="app")
    rows = check_certificates(endpoints=[endpoint], files=files)
    assert sorted(r["class"] for r in rows) == ["ok", "ok", "warning"]
    resolved = wait_for(
        lambda: open_records().incidents.get(incident["id"]).state == "Resolved",
        20,
        "the incident to be resolved by the all-clear",
    )
    assert resolved
