"""SSH against real lab hosts: results, pinned keys, permanent and transient failures, quoting."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import threading
import time

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from opsflow.errors import (
    CommandFailedError,
    CommandTimeoutError,
    HostKeyMismatchError,
    SSHPermanentError,
)
from opsflow.tasks.ssh import execute, run_command
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ssh_credentials")


def run_count(task_run_id) -> int:
    with get_client(sync_client=True) as client:
        return client.read_task_run(task_run_id).run_count


def test_output_and_exit_status(estate) -> None:
    host = estate.hosts[0]
    result = execute(host, ["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.host == host.name
    with pytest.raises(CommandFailedError) as caught:
        execute(host, ["sh", "-c", "echo boom >&2; exit 2"])
    assert caught.value.exit_status == 2
    assert host.name in str(caught.value) and "boom" in str(caught.value)


def test_a_command_that_ends_before_reading_its_input_fails_as_itself(estate) -> None:
    """Its exit status and message, not a lost connection: the host answered."""
    host = estate.hosts[0]
    for _ in range(3):
        with pytest.raises(CommandFailedError) as caught:
            execute(host, ["sh", "-c", "echo no room >&2; exit 4"], stdin=b"x" * 8_000_000)
        assert caught.value.exit_status == 4 and "no room" in str(caught.value)
    assert execute(host, ["hostname"]).stdout.strip() == host.name, "the connection lives on"


def test_each_host_is_itself(estate) -> None:
    names = {execute(h, ["hostname"]).stdout.strip() for h in estate.hosts}
    assert names == {h.name for h in estate.hosts}


def test_host_key_mismatch_is_refused(estate) -> None:
    first, second = estate.hosts[0], estate.hosts[1]
    impostor = first.model_copy(update={"host_key": second.host_key})
    with pytest.raises(HostKeyMismatchError) as caught:
        execute(impostor, ["touch", "/root/should-not-exist"])
    assert first.name in str(caught.value) and "host key mismatch" in str(caught.value)
    assert execute(first, ["ls", "/root"]).stdout.count("should-not-exist") == 0


def test_wrong_key_is_permanent_and_not_retried(estate, lab, tmp_path) -> None:
    from opsflow.blocks.registration import save_ssh_credentials

    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    save_ssh_credentials("stranger", key)
    host = estate.hosts[0].model_copy(update={"credentials": "stranger"})

    @flow
    def attempt():
        state = run_command(host, ["true"], return_state=True)
        return state.state_details.task_run_id, state.result(raise_on_failure=False)

    task_run_id, error = attempt()
    assert isinstance(error, SSHPermanentError)
    assert "lab01: authentication as 'root' refused" in str(error)
    assert run_count(task_run_id) == 1


def _session_sshds(listener_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(listener_pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_killed_sshd_mid_command_is_retried(estate, lab) -> None:
    lab_host = lab.hosts[2]
    host = estate.host(lab_host.name)
    execute(host, ["rm", "-f", "/root/attempt"])
    script = "if [ -e /root/attempt ]; then echo second; else touch /root/attempt; sleep 30; fi"

    def kill_session_when_started() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            marker = subprocess.run(
                ["nsenter", "-t", str(lab_host.sshd_pid), "-m", "test", "-e", "/root/attempt"]
            )
            if marker.returncode == 0:
                for pid in _session_sshds(lab_host.sshd_pid):
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    @flow
    def attempt():
        state = run_command(host, ["sh", "-c", script], timeout_s=60, return_state=True)
        return state.state_details.task_run_id, state.result(raise_on_failure=False)

    killer = threading.Thread(target=kill_session_when_started)
    killer.start()
    task_run_id, result = attempt()
    killer.join()
    assert result.stdout == "second\n"
    assert run_count(task_run_id) == 2


def test_command_past_its_timeout_fails_and_is_killed_on_the_host(estate) -> None:
    host = estate.hosts[0]
    killed = r"timed out after 1s; its processes on the host were killed \(process group (\d+)\)"
    with pytest.raises(CommandTimeoutError, match=killed) as caught:
        execute(host, ["sleep", "30"], timeout_s=1)
    assert "sleep 30" in str(caught.value)
    found = re.search(killed, str(caught.value))
    assert found is not None
    group = found[1]
    wait_for(
        lambda: execute(host, ["pgrep", "-g", group], check=False).exit_status == 1,
        10,
        f"process group {group} to be gone from {host.name}",
    )


def test_metacharacters_reach_the_command_literally(estate) -> None:
    host = estate.hosts[0]
    hostile = 'a\'; touch /root/pwned; echo "$HOME" `id` $(id) | && > /root/pwned2 \\ \n *'
    result = execute(host, ["printf", "%s", hostile])
    assert result.stdout == hostile
    listing = execute(host, ["ls", "/root"]).stdout.split()
    assert "pwned" not in listing and "pwned2" not in listing


def test_a_user_added_on_one_host_exists_only_there(estate) -> None:
    first, second = estate.hosts[0], estate.hosts[1]
    execute(first, ["sh", "-c", "id lab-isolation || useradd -m lab-isolation"])
    assert execute(first, ["id", "-u", "lab-isolation"]).ok
    assert execute(second, ["id", "-u", "lab-isolation"], check=False).exit_status != 0
    with pytest.raises(KeyError):
        pwd.getpwnam("lab-isolation")
