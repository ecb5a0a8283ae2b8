"""Asking lab hosts from outside whether they answer (the ssh banner, the app's /health and
/version, every host's status) and waiting until something holds.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from opsflow.errors import LabError
from opsflow.lab.hosts.plan import APP_PORT, SSH_PORT
from opsflow.lab.hosts.state import LabHost, lab_state


def ssh_banner(address: str, port: int = SSH_PORT, timeout: float = 1.0) -> str | None:
    """The SSH identification line the port sends, or None if nothing answers in time."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return line if line.startswith("SSH-") else None


def app_health(address: str, port: int = APP_PORT, timeout: float = 1.0) -> dict[str, Any] | None:
    """The app's /health answer as a dict, or None if it does not answer 200 in time."""
    return _get_json(address, port, "/health", timeout)


def app_version(address: str, port: int = APP_PORT, timeout: float = 1.0) -> str | None:
    """The version the app says it runs (/version), healthy or not; None if it does not answer."""
    answer = _get_json(address, port, "/version", timeout)
    version = answer.get("version") if answer else None
    return version if isinstance(version, str) else None


def set_app_state(
    address: str, token: str, state: str, reason: str = "", timeout: float = 5.0
) -> dict[str, Any]:
    """Put the app in or out of service through its admin API (`PUT /admin/state`); its
    answer, or LabError saying why not."""
    conn = http.client.HTTPConnection(address, APP_PORT, timeout=timeout)
    body = json.dumps({"state": state, "reason": reason})
    try:
        conn.request(
            "PUT",
            "/admin/state",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise LabError(f"{address}: the app's admin API does not answer: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise LabError(f"{address}: PUT /admin/state answered {response.status}: {text[:200]}")
    return json.loads(text)


def _get_json(address: str, port: int, path: str, timeout: float) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        answer = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return answer if isinstance(answer, dict) else None


def poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def lab_status(directory: Path | None = None) -> list[dict[str, Any]]:
    """Per host: name, address, whether sshd runs, the ssh port answers, the app is healthy,
    and the app's PID and version."""
    lab = lab_state(directory)

    def check(host: LabHost) -> dict[str, Any]:
        banner = ssh_banner(host.address, host.ssh_port, timeout=1.0)
        health = app_health(host.address, host.app_port, timeout=1.0)
        return {
            "name": host.name,
            "address": host.address,
            "ssh_port": host.ssh_port,
            "app_port": host.app_port,
            "sshd_pid": host.sshd_pid,
            "sshd_running": host.sshd_pid is not None,
            "ssh_answers": banner is not None,
            "app_healthy": bool(health and health.get("host") == host.name),
            "app_pid": health.get("pid") if health else None,
            "app_version": health.get("version") if health else None,
        }

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(lab.hosts)))) as pool:
        return list(pool.map(check, lab.hosts))
