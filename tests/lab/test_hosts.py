"""The lab against itself: real sshd hosts, real namespaces, real breakage, nothing mocked."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from opsflow.errors import LabError
from opsflow.inventory.loader import load_estate
from opsflow.lab.hosts.breakage import break_host
from opsflow.lab.hosts.checks import require_root
from opsflow.lab.hosts.down import lab_down
from opsflow.lab.hosts.probes import app_health, app_version, lab_status
from opsflow.lab.hosts.releases import INITIAL_RELEASE, RELEASES
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.lab.hosts.state import Lab, lab_state
from opsflow.lab.hosts.up import lab_up

pytestmark = pytest.mark.slow  # brings up its own daemons

BASE_ADDRESS = "127.0.30.1"
DOWN_BASE_ADDRESS = "127.0.31.1"


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (mount and UTS namespaces)")


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 3-host lab of its own, on addresses no other test lab uses."""
    needs_root()
    directory = tmp_path_factory.mktemp("lab3")
    lab = lab_up(directory, hosts=3, base_address=BASE_ADDRESS)
    try:
        yield lab
    finally:
        lab_down(directory)


def run(lab: Lab, host: str, *argv: str) -> str:
    """Run a command on a lab host (ground truth, not SSH); its stdout, failing on non-zero."""
    result = run_on_host(host, list(argv), lab.directory)
    assert result.returncode == 0, f"{argv} on {host}: {result.stderr}"
    return result.stdout


def log_disk_percent(lab: Lab, host: str) -> int:
    return int(run(lab, host, "df", "--output=pcent", "/var/log/app").split()[-1].rstrip("%"))


def mount_namespace(pid: int | None) -> int:
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def namespace_members(namespaces: set[int]) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}/ns/mnt").st_ino in namespaces:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def processes_mounting(directory: Path) -> list[int]:
    """Processes whose mount table still holds a mount made from `directory`."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if str(directory) in Path(f"/proc/{entry.name}/mountinfo").read_text():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_require_root_says_why_and_what_to_run() -> None:
    require_root(0)
    with pytest.raises(LabError) as excinfo:
        require_root(1000)
    message = str(excinfo.value)
    assert "needs root" in message
    assert "namespaces" in message
    assert "sudo" in message


def test_estate_loads_with_the_inventory_loader(lab3: Lab) -> None:
    estate = load_estate(lab3.estate_dir)
    assert [h.name for h in estate.hosts] == ["lab01", "lab02", "lab03"]
    assert [h.address for h in estate.hosts] == ["127.0.30.1", "127.0.30.2", "127.0.30.3"]
    assert {h.port for h in estate.hosts} == {2222}
    assert estate.groups == {
        "lab": ["lab01", "lab02", "lab03"],
        "web": ["lab01", "lab03"],
        "db": ["lab02"],
    }
    app = estate.service("app")
    assert [h.name for h in estate.hosts_of(app)] == ["lab01", "lab02", "lab03"]
    assert app.health_check.kind == "http" and app.health_check.port == 18080
    assert app.control is not None and app.control.restart == [SVC, "restart"]
    assert app.runbooks["service-hung"] == "recover-hung-service"
    assert all(h.host_key for h in estate.hosts)


def test_each_host_presents_its_own_pinned_host_key(lab3: Lab) -> None:
    estate = load_estate(lab3.estate_dir)
    seen = set()
    for host in estate.hosts:
        sock = socket.create_connection((host.address, host.port), timeout=5)
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = 5
            transport.start_client(timeout=5)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
        assert f"{key.get_name()} {key.get_base64()}" == host.host_key
        seen.add(key.get_base64())
    assert len(seen) == len(estate.hosts)


def test_client_key_logs_in_as_root_with_pinned_keys(lab3: Lab) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab3.estate_dir / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    host = lab3.hosts[1]
    client.connect(
        host.address,
        port=host.ssh_port,
        username="root",
        key_filename=str(lab3.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
    )
    try:
        _, stdout, _ = client.exec_command("hostname; cat /etc/app/app.conf", timeout=10)
        output = stdout.read().decode()
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
    assert output.splitlines()[0] == host.name
    assert f"ADDRESS={host.address}" in output


def test_health_answers_with_the_hosts_name_and_pid(lab3: Lab) -> None:
    for host in lab3.hosts:
        answer = app_health(host.address, host.app_port, timeout=3)
        assert answer is not None
        assert answer["host"] == host.name
        assert str(answer["pid"]) == run(lab3, host.name, "cat", "/var/lib/app/app.pid").strip()
    assert all(
        row["sshd_running"] and row["ssh_answers"] and row["app_healthy"]
        for row in lab_status(lab3.directory)
    )


def test_break_service_stops_the_app_on_that_host_only(lab3: Lab) -> None:
    broken, others = lab3.hosts[1], [lab3.hosts[0], lab3.hosts[2]]
    try:
        assert "stopped the app" in break_host(broken.name, "service", lab3.directory)
        assert "not running" in break_host(broken.name, "service", lab3.directory)
        assert app_health(broken.address, timeout=2) is None
        assert run_on_host(broken.name, [SVC, "status"], lab3.directory).returncode == 3
        assert all(app_health(h.address, timeout=2) for h in others)
    finally:
        first = run_on_host(broken.name, [SVC, "start"], lab3.directory)
    assert first.returncode == 0
    assert (app_health(broken.address, timeout=2) or {}).get("host") == broken.name
    again = run_on_host(broken.name, [SVC, "start"], lab3.directory)
    assert again.returncode == 0
    assert "already running" in again.stdout


def test_break_hang_freezes_the_app_and_restart_recovers(lab3: Lab) -> None:
    host = lab3.hosts[0]
    old_pid = (app_health(host.address, timeout=2) or {})["pid"]
    try:
        assert "SIGSTOP" in break_host(host.name, "hang", lab3.directory)
        assert "already frozen" in break_host(host.name, "hang", lab3.directory)
        assert app_health(host.address, timeout=0.5) is None
        assert process_state(old_pid) == "T"
    finally:
        restarted = run_on_host(host.name, [SVC, "restart"], lab3.directory)
    assert restarted.returncode == 0, restarted.stderr
    answer = app_health(host.address, timeout=2)
    assert answer is not None
    assert answer["pid"] != old_pid


def test_break_disk_fills_that_hosts_log_disk_only(lab3: Lab) -> None:
    host, other = lab3.hosts[2], lab3.hosts[0]
    try:
        message = break_host(host.name, "disk", lab3.directory)
        assert log_disk_percent(lab3, host.name) >= 95, message
        assert "nothing written" in break_host(host.name, "disk", lab3.directory)
        assert log_disk_percent(lab3, other.name) < 50
        ten_days_ago = time.time() - 10 * 86400
        mtimes = run(
            lab3, host.name, "find", "/var/log/app", "-name", "app.log.*", "-printf", "%T@\n"
        )
        assert mtimes.split() and all(float(m) <= ten_days_ago for m in mtimes.split())
        assert not Path("/var/log/app/app.log.1").exists()
    finally:
        run(lab3, host.name, "find", "/var/log/app", "-name", "app.log.*", "-delete")
    assert log_disk_percent(lab3, host.name) < 50


def test_each_host_keeps_the_releases_and_runs_the_initial_one(lab3: Lab) -> None:
    for host in lab3.hosts:
        assert run(lab3, host.name, "ls", "/var/lib/app/releases").split() == sorted(RELEASES)
        assert run(lab3, host.name, "readlink", "/var/lib/app/current").strip() == (
            f"releases/{INITIAL_RELEASE}"
        )
        assert app_version(host.address, timeout=2) == INITIAL_RELEASE
        assert (app_health(host.address, timeout=2) or {}).get("version") == INITIAL_RELEASE
        assert f"release {INITIAL_RELEASE}" in run(lab3, host.name, SVC, "status")


def switch_and_restart(lab: Lab, host: str, version: str) -> subprocess.CompletedProcess[str]:
    """Point the host's `current` at `version` (ground truth, not SSH) and restart the app."""
    run(lab, host, "ln", "-sfn", f"releases/{version}", "/var/lib/app/current")
    return run_on_host(host, [SVC, "restart"], lab.directory)


def test_restart_runs_the_release_current_names(lab3: Lab) -> None:
    host = lab3.hosts[1]
    try:
        assert run(lab3, host.name, SVC, "restart")  # a restart alone keeps the release
        assert app_version(host.address, timeout=2) == INITIAL_RELEASE

        assert switch_and_restart(lab3, host.name, "1.1.0").returncode == 0
        assert (app_health(host.address, timeout=2) or {}).get("version") == "1.1.0"
        assert "release 1.1.0" in run(lab3, host.name, SVC, "status")

        assert switch_and_restart(lab3, host.name, "1.2.0-badhealth").returncode == 0
        assert app_version(host.address, timeout=2) == "1.2.0-badhealth"
        assert app_health(host.address, timeout=2) is None

        nostart = switch_and_restart(lab3, host.name, "1.3.0-nostart")
        assert nostart.returncode == 1
        assert "1.3.0-nostart did not come up" in nostart.stderr
        assert app_version(host.address, timeout=0.5) is None
        assert run_on_host(host.name, [SVC, "status"], lab3.directory).returncode == 3
    finally:
        back = switch_and_restart(lab3, host.name, INITIAL_RELEASE)
    assert back.returncode == 0, back.stderr
    assert (app_health(host.address, timeout=2) or {}).get("version") == INITIAL_RELEASE


def test_start_refuses_a_current_outside_the_releases(lab3: Lab) -> None:
    host = lab3.hosts[2]
    try:
        run(lab3, host.name, SVC, "stop")
        run(lab3, host.name, "ln", "-sfn", "/usr/lib", "/var/lib/app/current")
        refused = run_on_host(host.name, [SVC, "start"], lab3.directory)
        assert refused.returncode == 5
        assert "not a release in /var/lib/app/releases" in refused.stderr
        assert app_health(host.address, timeout=0.5) is None
    finally:
        back = switch_and_restart(lab3, host.name, INITIAL_RELEASE)
    assert back.returncode == 0, back.stderr


def test_etc_home_and_root_are_private_to_each_host(lab3: Lab) -> None:
    one, two = lab3.hosts[0].name, lab3.hosts[1].name
    paths = ["/etc/opsflow-lab-probe", "/home/opsflow-lab-probe", "/root/opsflow-lab-probe"]
    try:
        run(lab3, one, "touch", *paths)
        run(lab3, one, "useradd", "--no-create-home", "labprobe")
        for path in paths:
            assert run_on_host(one, ["test", "-e", path], lab3.directory).returncode == 0
            assert run_on_host(two, ["test", "-e", path], lab3.directory).returncode == 1
            assert not Path(path).exists()
        assert run_on_host(two, ["id", "labprobe"], lab3.directory).returncode != 0
        assert "labprobe:" not in Path("/etc/passwd").read_text()
        assert run(lab3, one, "hostname").strip() == one
        assert run(lab3, two, "hostname").strip() == two
    finally:
        run_on_host(one, ["userdel", "labprobe"], lab3.directory)
        run_on_host(one, ["rm", "-f", *paths], lab3.directory)


def test_unknown_host_is_a_clear_error(lab3: Lab) -> None:
    with pytest.raises(LabError, match="no host 'lab09'"):
        run_on_host("lab09", ["true"], lab3.directory)
    with pytest.raises(LabError, match="no host 'lab09'"):
        break_host("lab09", "service", lab3.directory)


def test_a_second_lab_on_the_same_addresses_is_refused(lab3: Lab, tmp_path: Path) -> None:
    other = tmp_path / "other-lab"
    with pytest.raises(LabError, match="already in use"):
        lab_up(other, hosts=1, base_address=BASE_ADDRESS)
    assert not other.exists()
    assert all(row["app_healthy"] for row in lab_status(lab3.directory))


def test_lab_up_replaces_and_lab_down_leaves_nothing(tmp_path: Path) -> None:
    needs_root()
    directory = tmp_path / "lab"
    mounts_before = sorted(Path("/proc/self/mounts").read_text().splitlines())

    try:
        first = lab_up(directory, hosts=2, base_address=DOWN_BASE_ADDRESS, log_size_mib=4)
        first_members = namespace_members({mount_namespace(h.sshd_pid) for h in first.hosts})
        second = lab_up(directory, hosts=2, base_address=DOWN_BASE_ADDRESS, log_size_mib=4)
        # By PID, not namespace inode: the kernel gives a freed inode number to the next one.
        assert all(process_state(pid) in (None, "Z") for pid in first_members)
        assert all(h.sshd_pid is not None for h in second.hosts)

        namespaces = {mount_namespace(h.sshd_pid) for h in second.hosts}
        members = namespace_members(namespaces)
        app_pids = {(app_health(h.address, timeout=2) or {}).get("pid") for h in second.hosts}
        assert app_pids <= set(members)
        assert all(row["app_healthy"] for row in lab_status(directory))
    finally:
        lab_down(directory)
    assert all(process_state(pid) in (None, "Z") for pid in members)
    assert processes_mounting(directory) == []
    assert not directory.exists()
    assert sorted(Path("/proc/self/mounts").read_text().splitlines()) == mounts_before
    assert all(app_health(h.address, timeout=0.5) is None for h in second.hosts)

    lab_down(directory)  # idempotent
    with pytest.raises(LabError, match="no lab"):
        lab_state(directory)
