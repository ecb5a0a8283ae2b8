"""The desk served from several processes on one port
(`python -m opsflow.desk.server --processes 2`).

Each process is a whole desk with its own group commit: every one of them accepts and
stores, a delivery repeated to another process is a duplicate there, a process that dies is
replaced, and none outlives the desk's own process.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import func, select

from opsflow.itsm.store.events import events
from opsflow.itsm.store.records import Records
from tests.support import PROJECT
from tests.support.factories import TOKENS
from tests.support.serving import free_port
from tests.support.waiting import wait_for

PATH = "/api/v1/events/alertmanager"
HEADERS = {"Authorization": f"Bearer {TOKENS['max']}", "Content-Type": "application/json"}


@dataclass
class Desk:
    """A desk started with `--processes 2`: its own process, its port and its log."""

    process: subprocess.Popen
    port: int
    log: Path

    def serving(self) -> list[int]:
        """The processes serving the port: the desk's children but uvicorn's helper."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == self.process.pid and b"spawn_main" in command:
                found.append(int(pid))
        return sorted(found)

    def stop(self) -> None:
        """Stop the desk (SIGTERM), and kill it if it has not stopped within a minute: a
        desk left behind keeps respawning processes on a port nobody uses any more."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)

    def connect(self, timeout_s: float = 30) -> http.client.HTTPConnection:
        """A keep-alive connection that has been answered once (so a process accepted it)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        connection.request("GET", "/api/v1/health")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        return connection

    def owner(self, connection: http.client.HTTPConnection) -> int | None:
        """The serving process that holds the server's end of `connection`."""
        client_port = connection.sock.getsockname()[1]
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            if local == self.port and remote == client_port:
                inode = fields[9]
        for pid in self.serving():
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        return None

    def connection_to(self, pid: int) -> http.client.HTTPConnection:
        """A connection accepted by serving process `pid`: the others are stopped meanwhile,
        so it is the one to accept once it has started (2 s at a time: uvicorn replaces a
        process that does not answer its pings for 5 s)."""

        def accepted_by_pid() -> http.client.HTTPConnection | None:
            others = [other for other in self.serving() if other != pid]
            for other in others:
                os.kill(other, signal.SIGSTOP)
            try:
                connection = self.connect(timeout_s=2)
            except OSError:
                return None
            finally:
                for other in others:
                    with suppress(ProcessLookupError):
                        os.kill(other, signal.SIGCONT)
            if self.owner(connection) != pid:
                connection.close()
                return None
            return connection

        return wait_for(accepted_by_pid, 90, f"desk process {pid} to accept a connection")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped has stopped running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_desk(database_url: str, estate_dir: Path, home: Path) -> Desk:
    port = free_port()
    env = {
        **os.environ,
        "OPSFLOW_HOME": str(home),
        "OPSFLOW_INVENTORY": str(estate_dir),
        "OPSFLOW_DATABASE_URL": database_url,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    log = home / "desk.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "opsflow.desk.server", "--port", str(port), "--processes", "2"],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    two_process_desk = Desk(process, port, log)

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        if len(two_process_desk.serving()) < 2:
            return False
        try:
            two_process_desk.connect().close()
        except OSError:
            return False
        return True

    try:
        wait_for(up, 90, "the desk to answer")
        for pid in two_process_desk.serving():
            two_process_desk.connection_to(pid).close()  # each has started
    except BaseException:
        process.kill()  # else it outlives the test, its children respawning without end
        process.wait(30)
        raise
    return two_process_desk


@pytest.fixture
def two_process_desk(
    records_url: str, desk_estate: Path, tmp_path: Path, prefect_server: None
) -> Iterator[Desk]:
    started = start_desk(records_url, desk_estate, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def webhook(prefix: str, count: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "ServiceDown", "host": "web1", "service": "app"},
            "annotations": {"summary": "app on web1 is down"},
            "startsAt": "2026-12-02T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{prefix}{index:04x}",
        }
        for index in range(count)
    ]
    return json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()


def post(connection: http.client.HTTPConnection, body: bytes) -> dict:
    connection.request("POST", PATH, body=body, headers=HEADERS)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 202, answer
    return answer


def stored_events(url: str) -> int:
    store = Records(url)
    try:
        with store.db.read() as conn:
            return conn.execute(select(func.count()).select_from(events)).scalar_one()
    finally:
        store.db.dispose()


def test_every_process_stores_and_a_repeat_to_another_is_a_duplicate(
    two_process_desk: Desk, records_url: str
) -> None:
    first, second = (two_process_desk.connection_to(pid) for pid in two_process_desk.serving())

    assert post(first, webhook("a", 3))["stored"] == 3
    repeated = post(second, webhook("a", 3))
    assert (repeated["stored"], repeated["duplicates"]) == (0, 3)
    assert post(second, webhook("b", 2))["stored"] == 2

    # The same delivery to both processes at once: each alert is stored by one of them.
    body = webhook("c", 50)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda c: post(c, body), (first, second)))
    assert sum(a["stored"] for a in answers) == 50
    assert sum(a["duplicates"] for a in answers) == 50
    assert stored_events(records_url) == 55


@pytest.fixture
def sqlite_desk(desk_estate: Path, tmp_path: Path, prefect_server: None) -> Iterator[Desk]:
    started = start_desk(f"sqlite:///{tmp_path / 'records.db'}", desk_estate, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def test_a_process_that_dies_is_replaced_and_the_other_answers_meanwhile(
    sqlite_desk: Desk,
) -> None:
    killed, survivor = sqlite_desk.serving()
    held = sqlite_desk.connection_to(survivor)
    os.kill(killed, signal.SIGKILL)

    assert post(held, webhook("d", 1))["stored"] == 1
    wait_for(
        lambda: len(sqlite_desk.serving()) == 2 and killed not in sqlite_desk.serving(),
        90,
        "a new process in place of the killed one",
    )
    replacement = next(pid for pid in sqlite_desk.serving() if pid != survivor)
    connection = sqlite_desk.connection_to(replacement)
    assert post(connection, webhook("e", 1))["stored"] == 1


def test_no_process_outlives_the_desk(sqlite_desk: Desk) -> None:
    serving = sqlite_desk.serving()
    sqlite_desk.process.kill()
    sqlite_desk.process.wait(10)

    wait_for(
        lambda: not any(alive(pid) for pid in serving),
        30,
        "the serving processes to die with the desk",
    )
    with pytest.raises(ConnectionError):  # refused, or reset by a listener closing just now
        sqlite_desk.connect()
