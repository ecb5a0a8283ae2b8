"""Access management on a lab of its own: real sshd hosts, people with real keys, a real desk.

The access tests (tests/tasks/access, tests/e2e/access) change accounts, keys and sudo rules on
hosts, so they get their own lab (other addresses, own credentials block, own estate and records
database) instead of the session's shared one: nothing they do can leak into other tests, and
they can run while another session's lab is up. The lab, its people and its estate are made
once per session (tests/conftest.py registers those fixtures); the environment that points
opsflow at them (`access_env`) and the desk on them are package-scoped, registered by the
conftest of each package whose tests use them, so they hold only while those tests run.
The lab's sshd reads only /etc/ssh/lab_authorized_keys; these tests also let it read users'
~/.ssh/authorized_keys, as a stock sshd does.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from tests.support.postgres import PostgresCluster
from tests.support.serving import ServedDesk, serve_app
from tests.support.waiting import wait_for

ACCESS_LAB_ADDRESS = os.environ.get("OPSFLOW_TEST_ACCESS_LAB_ADDRESS", "127.0.44.1")
"""Where the access lab listens; another address lets two test sessions run side by side."""
ACCESS_CREDENTIALS = "opsflow-access-lab"
PEOPLE = ("alice", "bob", "carol")
AUTHORIZED_KEYS_LINE = "AuthorizedKeysFile /etc/ssh/lab_authorized_keys .ssh/authorized_keys"


def _listening_sockets(pid: int) -> set[str]:
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets.add(target)
    return sockets


def _read_user_keys(lab: Any) -> None:
    """Make each lab host's sshd also read ~/.ssh/authorized_keys, then reload it."""
    from opsflow.lab.hosts.probes import ssh_banner
    from opsflow.lab.hosts.run import run_on_host

    for host in lab.hosts:
        config = run_on_host(host.name, ["cat", "/etc/ssh/sshd_config"], lab.directory).stdout
        if AUTHORIZED_KEYS_LINE in config:
            continue
        lines = [
            AUTHORIZED_KEYS_LINE if line.startswith("AuthorizedKeysFile ") else line
            for line in config.splitlines()
        ]
        new = "\n".join(lines) + "\n"
        run_on_host(
            host.name,
            ["sh", "-c", 'printf "%s" "$1" > /etc/ssh/sshd_config', "sh", new],
            lab.directory,
        )
        before = _listening_sockets(host.sshd_pid)
        os.kill(host.sshd_pid, signal.SIGHUP)  # sshd re-executes itself, same pid, new socket
        wait_for(
            lambda h=host, b=before: (
                _listening_sockets(h.sshd_pid) - b and ssh_banner(h.address, h.ssh_port)
            ),
            10,
            f"{host.name}'s sshd to reload",
        )


@dataclass(frozen=True)
class Person:
    """A lab person with their own SSH key and desk token."""

    name: str
    key_file: Path
    public_key: str
    token: str


@pytest.fixture(scope="session")
def access_lab(opsflow_home: Path) -> Iterator[Any]:
    """Five lab hosts (lab01..lab05; odd ones in web, even ones in db) for access tests only."""
    from opsflow.lab.hosts.down import lab_down
    from opsflow.lab.hosts.up import lab_up
    from opsflow.tasks.ssh_connections import close_connections

    directory = opsflow_home / "access-lab"
    lab = lab_up(directory, hosts=5, base_address=ACCESS_LAB_ADDRESS)
    try:
        _read_user_keys(lab)
        yield lab
    finally:
        close_connections()
        lab_down(directory)


@pytest.fixture(scope="session")
def access_people(access_lab: Any) -> dict[str, Person]:
    """alice (operator, ops), bob (approver, ops), carol (requester, users): keys and tokens."""
    from opsflow.lab.people import token_file

    keys = access_lab.directory / "people-keys"
    keys.mkdir(exist_ok=True)
    found = {}
    for name in PEOPLE:
        key_file = keys / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key_file)],
            check=True,
            timeout=30,
        )
        found[name] = Person(
            name=name,
            key_file=key_file,
            public_key=key_file.with_name(name + ".pub").read_text().strip(),
            token=token_file(access_lab.directory, name).read_text().strip(),
        )
    return found


@pytest.fixture(scope="session")
def access_estate_dir(access_lab: Any, access_people: dict[str, Person]) -> Path:
    """The access lab's estate with its own credentials block, people's keys and entitlements."""
    from opsflow.lab.entitlements import write_entitlements

    estate_dir: Path = access_lab.estate_dir
    hosts_file = estate_dir / "hosts.yaml"
    hosts = yaml.safe_load(hosts_file.read_text())
    for host in hosts["hosts"]:
        host["credentials"] = ACCESS_CREDENTIALS
    hosts_file.write_text(yaml.safe_dump(hosts, sort_keys=False))
    people_file = estate_dir / "people.yaml"
    data = yaml.safe_load(people_file.read_text())
    for entry in data["people"]:
        if entry["name"] in access_people:
            entry["ssh_public_key"] = access_people[entry["name"]].public_key
    people_file.write_text(yaml.safe_dump(data, sort_keys=False))
    path = write_entitlements(estate_dir)
    data = yaml.safe_load(path.read_text())
    data["entitlements"].append(  # every host, to measure access on the whole lab
        {
            "name": "lab-login",
            "group": "lab",
            "privilege": "login",
            "requesters": {"roles": ["requester"]},
            "approvers": {"roles": ["approver"]},
            "max_duration_hours": 1,
        }
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return estate_dir


@pytest.fixture(scope="session")
def access_records_url(postgres: PostgresCluster) -> str:
    """The access lab's own records database, on the session's PostgreSQL."""
    postgres.create_database("access_records")
    return postgres.url("access_records")


@pytest.fixture(scope="package")
def access_env(
    access_estate_dir: Path, access_records_url: str, prefect_server: None, access_lab: Any
) -> Iterator[None]:
    """Point opsflow at the access estate, its own records database (on the session's
    PostgreSQL) and credentials block."""
    from opsflow.blocks.registration import register_block_types, save_ssh_credentials

    register_block_types()
    save_ssh_credentials(ACCESS_CREDENTIALS, access_lab.client_key)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPSFLOW_INVENTORY", str(access_estate_dir))
        patch.setenv("OPSFLOW_DATABASE_URL", access_records_url)
        yield


@pytest.fixture(scope="package")
def access_estate(access_env: None, access_estate_dir: Path) -> Any:
    """The access lab's estate, loaded through the real loader."""
    from opsflow.inventory.loader import load_estate

    return load_estate(access_estate_dir)


@pytest.fixture(scope="package")
def access_desk(access_env: None, access_estate_dir: Path) -> Iterator[ServedDesk]:
    """The desk with the access API, served by uvicorn on a free port, and a worker that
    carries out its access changes (`.worker`), both in this process."""
    from opsflow.desk.app import create_app
    from opsflow.desk.estate import EstateCache
    from opsflow.itsm.store.records import open_records
    from opsflow.runtime.worker import Worker

    app = create_app(open_records(), EstateCache(access_estate_dir))
    with serve_app(app) as url:
        desk = ServedDesk(url, Worker(open_records()))
        desk.worker.start()
        yield desk
        desk.worker.stop()


# --- checking access the way a user would ------------------------------------------------------


def _host_key(public: str) -> paramiko.PKey:
    key_type, body = public.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(body))


def ssh_as(host: Any, username: str, key_file: Path, command: str = "true") -> int | None:
    """Log in as `username` with the key and run `command`: its exit status, None if refused."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    host_key = _host_key(host.host_key)
    client.get_host_keys().add(f"[{host.address}]:{host.port}", host_key.get_name(), host_key)
    try:
        client.connect(
            host.address,
            port=host.port,
            username=username,
            key_filename=str(key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            auth_timeout=10,
            banner_timeout=10,
        )
    except paramiko.AuthenticationException:
        return None
    try:
        _, stdout, _ = client.exec_command(command, timeout=20)
        return stdout.channel.recv_exit_status()
    finally:
        client.close()


def host_state(lab: Any, host: str) -> dict[str, str]:
    """Ground truth through the lab (not SSH): user database, sudo rules, homes and keys."""
    from opsflow.lab.hosts.run import run_on_host

    script = """
for f in /etc/passwd /etc/shadow /etc/group /etc/gshadow /etc/subuid /etc/subgid; do
  echo "== $f"; cat "$f" 2>/dev/null
done; echo ---
for f in /etc/sudoers.d/*; do echo "== $f"; cat "$f"; done; echo ---
ls -la /home /var/mail 2>/dev/null | grep -v ' \\.\\.\\?$'; echo ---
find /home -path '*/.ssh/authorized_keys' -exec sh -c 'echo "== $1"; cat "$1"' sh {} \\;
"""
    out = run_on_host(host, ["sh", "-c", script], lab.directory).stdout
    users, sudoers, homes, keys = out.split("---\n")
    return {"users": users, "sudoers": sudoers, "homes": homes, "keys": keys}


def live_grant(grant_id: int, username: str, public_key: str, hosts: list[str]) -> Any:
    """An active login grant record, as the store would hand it to revocation."""
    from datetime import UTC, datetime, timedelta

    from opsflow.itsm.access import AccessGrant

    now = datetime.now(UTC)
    return AccessGrant(
        id=grant_id,
        entitlement="lab-login",
        privilege="login",
        host_group="lab",
        requester="carol",
        username=username,
        ssh_public_key=public_key,
        duration_minutes=60,
        state="active",
        requested_at=now,
        hosts=hosts,
        starts_at=now,
        ends_at=now + timedelta(hours=1),
    )


def lab_state(lab: Any) -> dict[str, dict[str, str]]:
    """Every host's `host_state`."""
    return {h.name: host_state(lab, h.name) for h in lab.hosts}
