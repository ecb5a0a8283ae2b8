"""The Prefect server `opsflow up` starts refuses callers without its auth string.

Its blocks hold the SSH key that is root on every host and the approval signing key, so a
local user without the auth string must get nothing from it; every process `up` starts,
and the `opsflow` command in another shell, must get in.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from desk.project import PROJECT_DIR
from desk.supervisor import Supervisor
from desk.up import (
    prefect_auth_string,
    prefect_env,
    secure_home,
    start_prefect_server,
    write_up_env,
)
from opsflow.settings import OpsflowSettings
from tests.support import free_port, wait_for

CLIENT = """
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print("block documents:", len(client.read_block_documents()), flush=True)
import signal
signal.pause()
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def without_prefect_settings() -> dict[str, str]:
    """This process's environment minus every Prefect setting: a fresh shell's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


@pytest.fixture(scope="module")
def up_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, Supervisor]]:
    """A Prefect server started by `up`'s own function, in a fresh opsflow home."""
    home = tmp_path_factory.mktemp("up") / "home"
    settings = OpsflowSettings(home=home)
    secure_home(home)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(without_prefect_settings())
    try:
        env = prefect_env(settings, free_port(), prefect_auth_string(home))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    supervisor = Supervisor(env)
    start_prefect_server(supervisor, env, home / "logs" / "prefect-server.log")
    yield env, supervisor
    for name in ("a client", "the Prefect server"):
        supervisor.stop(name)


def test_the_api_refuses_callers_without_the_auth_string(up_server) -> None:
    env, _ = up_server
    url = env["PREFECT_API_URL"] + "/block_documents/filter"
    user, _, password = env["PREFECT_API_AUTH_STRING"].partition(":")

    assert requests.post(url, json={}, timeout=30).status_code == 401
    assert requests.post(url, json={}, auth=(user, "guess"), timeout=30).status_code == 401
    answer = requests.post(url, json={}, auth=(user, password), timeout=30)
    assert answer.status_code == 200, answer.text
    assert requests.get(env["PREFECT_API_URL"] + "/health", timeout=30).ok, "probes stay open"


def test_the_auth_string_is_made_once_and_private(up_server) -> None:
    env, _ = up_server
    home = Path(env["OPSFLOW_HOME"])
    assert mode(home) == 0o700
    assert mode(home / "prefect-api-auth") == 0o600
    assert prefect_auth_string(home) == env["PREFECT_API_AUTH_STRING"], "kept across runs"
    assert len(env["PREFECT_API_AUTH_STRING"]) > 40


def test_processes_up_starts_carry_it_in_their_environment_only(up_server) -> None:
    env, supervisor = up_server
    auth = env["PREFECT_API_AUTH_STRING"].encode()
    log = Path(env["OPSFLOW_HOME"]) / "logs" / "client.log"
    client = supervisor.start("a client", [sys.executable, "-c", CLIENT], log)
    wait_for(lambda: "block documents:" in log.read_text(), 60, f"the client to read ({log})")

    server = supervisor.process("the Prefect server")
    for pid, setting in (
        (client.pid, "PREFECT_API_AUTH_STRING"),
        (server.pid, "PREFECT_SERVER_API_AUTH_STRING"),
    ):
        assert auth not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f"{setting}=".encode() + auth in Path(f"/proc/{pid}/environ").read_bytes().split(
            b"\0"
        )
    client_environ = Path(f"/proc/{client.pid}/environ").read_bytes()
    assert b"PREFECT_SERVER_API_AUTH_STRING" not in client_environ, "only the server has it"


def test_the_cli_in_another_shell_finds_the_server(up_server, tmp_path: Path) -> None:
    env, _ = up_server
    home = Path(env["OPSFLOW_HOME"])
    up_env = write_up_env(home, env)
    assert mode(up_env) == 0o600
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    shell = {**without_prefect_settings(), "OPSFLOW_HOME": str(home)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "desk.cli",
            "credentials",
            "add",
            "from-shell",
            "--key-file",
            str(key),
        ],
        env=shell,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    user, _, password = env["PREFECT_API_AUTH_STRING"].partition(":")
    answer = requests.post(
        env["PREFECT_API_URL"] + "/block_documents/filter",
        json={"block_documents": {"name": {"any_": ["from-shell"]}}},
        auth=(user, password),
        timeout=30,
    )
    assert [d["name"] for d in answer.json()] == ["from-shell"]
