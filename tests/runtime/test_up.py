"""`opsflow up`, run as a user runs it, on a two-host lab in a fresh opsflow home.

It comes up on a PostgreSQL cluster it owns in the home (the Prefect server's database and
the records); its Prefect API refuses callers without the auth string, whose blocks hold the
SSH key that is root on every host; every process it starts gets its secrets through the
environment only; the `opsflow` command in another shell, with nothing set but the home,
finds the Prefect server, the desk and the records it started; SIGTERM stops everything,
PostgreSQL included. The tests run in order: the last one stops `up`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import requests

from opsflow.runtime.postgres import SYSTEM_USER, Cluster, running_pid, stop_cluster
from opsflow.runtime.project import PROJECT_DIR, read_deployments
from opsflow.runtime.up import prefect_auth_string
from tests.support.serving import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # brings up its own daemons

UP_TIMEOUT_S = 300.0
"""A fresh cluster, Prefect's migrations, a lab host, monitoring and every deployment, on a
machine busy with the rest of the suite."""
LAB_ADDRESSES = [f"127.0.{octet}.1" for octet in range(60, 70)]
"""Clear of the fixed addresses of other tests (127.0.20-31, 40, 44, 50-51, 99) and `make up`
(127.0.10)."""


@dataclass
class Up:
    process: subprocess.Popen
    home: Path
    output: Path
    api_url: str
    desk_url: str
    cluster: Cluster

    @property
    def auth_string(self) -> str:
        return (self.home / "prefect-api-auth").read_text().strip()

    def shell(self) -> dict[str, str]:
        """A fresh shell's environment: the home, and nothing that says where anything is."""
        return {
            "HOME": os.environ["HOME"],
            "PATH": os.environ["PATH"],
            "OPSFLOW_HOME": str(self.home),
        }

    def opsflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`opsflow ARGS` in that other shell; it must succeed."""
        result = subprocess.run(
            [sys.executable, "-m", "opsflow.cli.main", *args],
            env=self.shell(),
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"opsflow {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def free_lab_address() -> str:
    """The first lab address where neither host's sshd (2222) nor app (18080) port is taken."""
    for address in LAB_ADDRESSES:
        hosts = (address, address.rsplit(".", 1)[0] + ".2")
        if not any(listening(host, port) for host in hosts for port in (2222, 18080)):
            return address
    pytest.fail(f"no free lab address in {LAB_ADDRESSES}")


def free_monitoring_port() -> int:
    """A Prometheus port whose +2, +3 and +9 (exporter, Alertmanager, pager) are free too."""
    for _ in range(50):
        base = free_port()
        if base + 9 < 65536 and not any(listening("127.0.0.1", base + n) for n in (2, 3, 9)):
            return base
    pytest.fail("no free block of monitoring ports")


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError):
            continue
    return {child: cmdline.decode(errors="replace") for child, cmdline in found.items()}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    """`opsflow up --hosts 2` in a fresh home (a one-host lab has no `db` group, which its
    entitlements name), on free ports, with a shell's environment:
    nothing the test session set (its Prefect server, desk, estate or records)."""
    # Not under pytest's temporary root: every pytest session that starts makes that 0700
    # again, and a chmod takes back the traverse an ACL granted the cluster's user.
    home = Path(tempfile.mkdtemp(prefix="opsflow-up-")) / "home"
    prefect_port, postgres_port = free_port(), free_port()
    desk_url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPSFLOW_"))}
    env |= {
        "OPSFLOW_HOME": str(home),
        "OPSFLOW_DESK_URL": desk_url,
        "OPSFLOW_POSTGRES_PORT": str(postgres_port),
    }
    output = home.parent / "up.out"
    argv = [
        sys.executable,
        "-m",
        "opsflow.cli.main",
        "up",
        "--hosts",
        "2",
        "--port",
        str(prefect_port),
    ]
    argv += ["--lab-address", free_lab_address()]
    argv += ["--monitoring-port", str(free_monitoring_port())]
    with output.open("w") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT
        )
    started = Up(
        process,
        home,
        output,
        f"http://127.0.0.1:{prefect_port}/api",
        desk_url,
        Cluster(home / "postgres", postgres_port),
    )
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while "Press Ctrl-C" not in output.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`opsflow up` did not come up:\n{output.read_text()}")
            time.sleep(0.5)
        yield started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # What a failed `up` could leave behind.
        from opsflow.lab.hosts.down import lab_down
        from opsflow.lab.monitoring import monitoring_down

        monitoring_down(home / "lab" / "monitoring")
        lab_down(home / "lab")
        stop_cluster(started.cluster)
        shutil.rmtree(home.parent, ignore_errors=True)


def test_the_api_refuses_callers_without_the_auth_string(up: Up) -> None:
    url = up.api_url + "/block_documents/filter"
    user, _, password = up.auth_string.partition(":")

    assert requests.post(url, json={}, timeout=30).status_code == 401
    assert requests.post(url, json={}, auth=(user, "guess"), timeout=30).status_code == 401
    answer = requests.post(url, json={}, auth=(user, password), timeout=30)
    assert answer.status_code == 200, answer.text
    assert requests.get(up.api_url + "/health", timeout=30).ok, "probes stay open"


def test_the_auth_string_and_the_home_are_private(up: Up) -> None:
    # 0700; as root, the group bits show the mask of the postgres user's traverse-only ACL.
    assert mode(up.home) & 0o067 == 0
    if os.geteuid() == 0:
        acl = subprocess.run(
            ["getfacl", "--omit-header", "--absolute-names", str(up.home)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert [e for e in acl if e.startswith("user:") and e != "user::rwx"] == [
            f"user:{SYSTEM_USER}:--x"
        ]
    assert mode(up.home / "prefect-api-auth") == 0o600
    assert prefect_auth_string(up.home) == up.auth_string, "kept across runs"
    assert len(up.auth_string) > 40
    assert mode(up.cluster.password_file) == 0o600
    assert mode(up.home / "up.env") == 0o600


def test_processes_carry_secrets_in_their_environment_only(up: Up) -> None:
    started = children(up.process.pid)
    auth, password = up.auth_string, up.cluster.password()
    by_role = {}
    for pid, cmdline in started.items():
        assert auth not in cmdline and password not in cmdline, cmdline
        for role, marker in (
            ("prefect", "prefect server start"),
            ("desk", "-m opsflow.desk.server "),
            ("serve", "-m opsflow.runtime.serve "),
            ("postgres", "/bin/postgres -D"),
        ):
            if marker in cmdline:
                by_role[role] = environ(pid)
    assert set(by_role) == {"prefect", "desk", "serve", "postgres"}, started

    server = by_role["prefect"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == auth
    assert server["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    for role in ("desk", "serve"):
        assert by_role[role]["PREFECT_API_AUTH_STRING"] == auth
        assert by_role[role]["OPSFLOW_DATABASE_URL"] == up.cluster.url("records")
        for server_only in (
            "PREFECT_SERVER_API_AUTH_STRING",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        ):
            assert server_only not in by_role[role]
    postgres = by_role["postgres"]
    assert not [key for key in postgres if key.startswith(("PREFECT", "OPSFLOW"))], postgres
    assert password not in "".join(postgres.values())


def test_prefect_and_the_records_live_in_the_cluster_in_the_home(up: Up) -> None:
    pid = running_pid(up.cluster)
    assert pid is not None
    assert up.cluster.data == up.home / "postgres" / "data"
    if os.geteuid() == 0:
        assert Path(f"/proc/{pid}").stat().st_uid != 0, "PostgreSQL runs unprivileged"
    with up.cluster.connect("prefect") as prefect:
        names = {row[0] for row in prefect.execute("SELECT name FROM deployment")}
        assert {spec.name for spec in read_deployments()} <= names
        assert prefect.execute("SELECT count(*) FROM flow_run").fetchone()[0] >= 1, "health check"
        automations = {row[0] for row in prefect.execute("SELECT name FROM automation")}
        assert "page-on-failed-itil-run" in automations, "prefect.yaml's trigger is served"
    with up.cluster.connect("records") as records:
        tables = {row[0] for row in records.execute("SELECT tablename FROM pg_tables")}
        assert {"events", "incidents", "audit"} <= tables
    # prometheus_client's multiprocess files are called *.db too: look at what files hold.
    sqlite = [p for p in up.home.rglob("*") if p.is_file() and _is_sqlite(p)]
    assert not sqlite, f"no SQLite database, neither Prefect's nor ours: {sqlite}"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host="127.0.0.1", port=up.cluster.port, user="opsflow", dbname="records",
            connect_timeout=5,
        )  # fmt: skip


def test_another_shell_finds_what_up_started(up: Up) -> None:
    from opsflow.itsm.store.facts import FactsSnapshot
    from opsflow.itsm.store.records import Records

    # Through up's Prefect server and its served deployments, with its auth string.
    rows = json.loads(up.opsflow("run", "health-check", "--json").stdout)
    assert sorted((r["host"], r["healthy"]) for r in rows) == [("lab01", True), ("lab02", True)]

    summary = f"reported from another shell {time.time()}"
    opened = json.loads(
        up.opsflow("incident", "open", "--summary", summary, "--host", "lab01", "--json").stdout
    )
    listed = json.loads(up.opsflow("incident", "list", "--json").stdout)
    assert opened["number"] in [i["number"] for i in listed]
    with up.cluster.connect("records") as records:
        stored = records.execute("SELECT summary FROM incidents WHERE summary = %s", [summary])
        assert stored.fetchall() == [(summary,)], "the desk keeps them in up's records"

    # The command reads the records itself: it finds up's, not a SQLite file of its own.
    store = Records(up.cluster.url("records"))
    gathered = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.facts.record([FactsSnapshot(host="lab01", gathered_at=gathered, reachable=True)])
    store.db.dispose()
    shown = json.loads(up.opsflow("inventory", "show", "lab01", "--json").stdout)
    assert "2026-01-02T03:04:05" in json.dumps(shown["history"])
    assert not (up.home / "opsflow.db").exists()


def test_ups_workers_restore_what_monitoring_finds_down(up: Up) -> None:
    workers = [c for c in children(up.process.pid).values() if "opsflow.runtime.worker" in c]
    assert len(workers) == 2, "up starts two workers by default"
    started = datetime.now(UTC)
    up.opsflow("lab", "break", "lab02", "service")

    def resolved() -> bool:
        listed = json.loads(up.opsflow("incident", "list", "--json").stdout)
        return any(
            i["host"] == "lab02"
            and i["state"] == "Resolved"
            and datetime.fromisoformat(i["opened_at"]) >= started
            for i in listed
        )

    wait_for(resolved, 120, "lab02's app to be restored by up's workers")


def test_its_prometheus_scrapes_every_opsflow_process_and_their_logs_say_what_they_do(
    up: Up,
) -> None:
    output = up.output.read_text()
    [prometheus] = re.findall(r"Prometheus: (http://127\.0\.0\.1:\d+)", output)
    announced = dict(re.findall(r"metrics of the (desk|worker \d): (http://\S+)", output))
    assert sorted(announced) == ["desk", "worker 1", "worker 2"]
    answer = requests.get(f"{prometheus}/api/v1/targets?state=active", timeout=30).json()
    scraped = {
        t["scrapeUrl"]: (t["labels"]["job"], t["health"])
        for t in answer["data"]["activeTargets"]
        if t["labels"]["job"].startswith("opsflow")
    }
    assert scraped == {
        announced["desk"]: ("opsflow-desk", "up"),
        announced["worker 1"]: ("opsflow-worker", "up"),
        announced["worker 2"]: ("opsflow-worker", "up"),
    }
    rules = requests.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    assert "opsflow-self" in {group["name"] for group in rules}

    logs = up.home / "logs"
    desk_log = (logs / "desk.log").read_text()
    assert "INFO opsflow.desk.server[" in desk_log
    assert "GET /api/v1/health 200 " in desk_log, "the access log"
    assert "INFO opsflow.worker[" in (logs / "worker-1.log").read_text()
    for log in logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert up.auth_string not in text and up.cluster.password() not in text, log


def test_sigterm_stops_everything_up_started(up: Up) -> None:
    postmaster = running_pid(up.cluster)
    assert postmaster is not None
    started = {*children(up.process.pid), *children(postmaster)}
    assert postmaster in started and len(started) >= 6

    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(120) == 0, up.output.read_text()
    assert [pid for pid in started if alive(pid)] == []
    assert not (up.cluster.data / "postmaster.pid").exists(), "PostgreSQL shut down cleanly"
    assert not listening("127.0.0.1", up.cluster.port)
    assert not (up.home / "up.env").exists()
    assert "database system is shut down" in (up.home / "logs" / "postgres.log").read_text()


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"
