"""Sessions on one host's connection: bounded, failing alone, killed on timeout, reaped idle."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import opsflow.tasks.ssh_connections
from opsflow.errors import CommandTimeoutError, SSHTransientError
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.ssh import execute
from opsflow.tasks.ssh_connections import (
    MAX_SESSIONS_PER_HOST,
    ConnectionPool,
    open_sftp,
    warm_connection,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ssh_credentials")


def test_a_timed_out_command_and_its_children_are_killed_on_the_host(estate) -> None:
    host = estate.host("lab03")
    # Brackets keep the pattern from matching the pgrep looking for it.
    running = ["pgrep", "-f", "sleep 30[0].7"]
    try:
        with pytest.raises(CommandTimeoutError, match="killed"):
            execute(host, ["sh", "-c", "sleep 300.7 & sleep 300.71; wait"], timeout_s=0.5)
        wait_for(
            lambda: run_on_host(host.name, running).returncode == 1,
            5,
            "the timed-out command's processes to be gone",
        )
    finally:
        run_on_host(host.name, ["pkill", "-KILL", "-f", "sleep 30[0].7"])


def test_a_timeout_leaves_the_other_commands_on_the_host_alone(estate) -> None:
    host = estate.host("lab03")
    execute(host, ["sh", "-c", "rm -rf /root/neighbours && mkdir /root/neighbours"])
    script = 'touch "/root/neighbours/started-$1"; sleep 2; echo "$1" >> /root/neighbours/done'
    count = MAX_SESSIONS_PER_HOST - 2
    with ThreadPoolExecutor(count) as threads:
        neighbours = [
            threads.submit(execute, host, ["sh", "-c", script, "sh", str(n)], 30)
            for n in range(count)
        ]
        wait_for(
            lambda: len(execute(host, ["ls", "/root/neighbours"]).stdout.split()) == count,
            10,
            "every neighbour to start",
        )
        with pytest.raises(CommandTimeoutError):
            execute(host, ["sleep", "30"], timeout_s=0.3)
        results = [f.result() for f in neighbours]
    assert all(r.ok for r in results)
    done = execute(host, ["cat", "/root/neighbours/done"]).stdout.split()
    assert sorted(done) == [str(n) for n in range(count)], "each ran once, to its end"


def test_more_commands_than_sshd_sessions_all_succeed(estate) -> None:
    host = estate.host("lab03")
    count = 3 * MAX_SESSIONS_PER_HOST
    with ThreadPoolExecutor(count) as threads:
        results = list(
            threads.map(
                lambda n: execute(host, ["sh", "-c", 'sleep 0.3; echo "$1"', "sh", str(n)]),
                range(count),
            )
        )
    assert [r.stdout for r in results] == [f"{n}\n" for n in range(count)]


def test_idle_connections_are_closed_and_the_reaper_ends(estate, monkeypatch) -> None:
    pool = ConnectionPool(idle_close_s=0.3)
    monkeypatch.setattr(opsflow.tasks.ssh_connections, "_pool", pool)
    execute(estate.host("lab03"), ["true"])
    [client] = [entry.client for entry in pool._hosts.values()]
    transport = client.get_transport()
    assert transport is not None and transport.is_alive()
    wait_for(lambda: not transport.is_alive(), 5, "the idle connection's thread to end")
    wait_for(lambda: pool._reaper is None, 5, "the reaper to end with no connection open")
    assert execute(estate.host("lab03"), ["true"]).ok, "a later command connects again"
    pool.close_all()


def _descendants(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = [int(p) for p in found.stdout.split()]
    return children + [d for child in children for d in _descendants(child)]


def test_a_stalled_sftp_read_fails_within_its_timeout(estate, lab) -> None:
    lab_host = next(h for h in lab.hosts if h.name == "lab02")
    host = estate.host(lab_host.name)
    opened, stalled = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            with open_sftp(host, 1.0) as sftp:
                opened.set()
                stalled.wait(10)
                sftp.stat("/")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(10)
    sessions = _descendants(lab_host.sshd_pid)
    for pid in sessions:
        os.kill(pid, signal.SIGSTOP)
    try:
        stalled.set()
        reader.join(10)
        assert not reader.is_alive(), "the read still waits on a stalled host"
    finally:
        for pid in sessions:
            os.kill(pid, signal.SIGCONT)
    assert outcome and isinstance(outcome[0], SSHTransientError), outcome
    assert "SFTP session failed: TimeoutError" in str(outcome[0]), "its own timeout ended it"
    assert execute(host, ["true"]).ok, "the connection serves the next command"


def _connections_to(address: str, port: int) -> int:
    """Established TCP connections from this machine to address:port (seen by the kernel)."""
    shown = subprocess.run(
        ["ss", "-Htn", "state", "established", "dst", f"{address}:{port}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return len(shown.stdout.splitlines())


def test_a_warmed_connection_is_the_one_the_next_command_uses(estate, monkeypatch) -> None:
    pool = ConnectionPool()
    monkeypatch.setattr(opsflow.tasks.ssh_connections, "_pool", pool)
    host = estate.host("lab04")
    before = _connections_to(host.address, host.port)
    warm_connection(host)
    assert _connections_to(host.address, host.port) == before + 1, "no connection was opened"
    assert execute(host, ["true"]).ok
    warm_connection(host)
    assert _connections_to(host.address, host.port) == before + 1, "a second one was opened"
    pool.close_all()


def test_warming_an_unreachable_host_fails_quietly(estate) -> None:
    unreachable = estate.host("lab04").model_copy(update={"address": "127.0.99.99", "port": 1})
    warm_connection(unreachable, timeout_s=2.0)  # the flow's own command reports it
