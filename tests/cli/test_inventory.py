"""`opsflow inventory import ansible`: the lab's estate, written as Ansible would describe it,
comes back as an estate `opsflow inventory check` accepts; refusals write nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from opsflow.cli.main import app
from opsflow.inventory.loader import load_estate
from opsflow.inventory.models import Estate, Host


def opsflow(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real `opsflow` command, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "opsflow.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ansible_inventory(estate: Estate) -> dict:
    """The lab as a team would have it in Ansible: `lab` holding `web` and `db`, the SSH port
    and user set once on `lab`, each host's address on the host."""
    ports = {h.port for h in estate.hosts}
    users = {h.user for h in estate.hosts}
    assert len(ports) == len(users) == 1
    children: dict[str, dict] = {}
    for host in estate.hosts:
        for group in host.groups:
            if group != "lab":
                hosts = children.setdefault(group, {"hosts": {}})["hosts"]
                hosts[host.name] = {"ansible_host": host.address}
    lab = {"vars": {"ansible_port": ports.pop(), "ansible_user": users.pop()}, "children": children}
    return {"all": {"children": {"lab": lab}}}


def test_the_labs_ansible_inventory_imports_into_a_valid_estate(
    lab, estate: Estate, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(ansible_inventory(estate)))
    out = tmp_path / "estate"
    out.mkdir()
    shutil.copy(lab.estate_dir / "services.yaml", out)  # its service runs on group `lab`
    known_hosts = lab.estate_dir / "known_hosts"

    imported = opsflow(
        "inventory", "import", "ansible", inventory, "--known-hosts", known_hosts,
        "--out", out, "--credentials", "opsflow-lab",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert f"{len(estate.hosts)} hosts in 3 groups" in imported.stdout
    checked = opsflow("inventory", "check", out)
    assert checked.returncode == 0, checked.stderr
    assert f"{len(estate.hosts)} hosts, 3 groups, 1 services: valid." in checked.stdout

    def summary(hosts: list[Host]) -> list[tuple]:
        return sorted(
            (h.name, h.address, h.port, h.user, h.credentials, h.host_key, sorted(h.groups))
            for h in hosts
        )

    assert summary(load_estate(out).hosts) == summary(estate.hosts)

    again = opsflow(
        "inventory", "import", "ansible", inventory, "--known-hosts", known_hosts, "--out", out
    )
    assert again.returncode == 1
    assert f"{out / 'hosts.yaml'} exists: give --force to replace it" in again.stderr


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = tmp_path / "known_hosts"
    path.write_text(
        f"[10.0.0.1]:2222 {' '.join(key.with_suffix('.pub').read_text().split()[:2])}\n"
    )
    return path


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_refusals_write_nothing_and_force_replaces(tmp_path: Path, known_hosts: Path) -> None:
    out = tmp_path / "estate"
    out.mkdir()
    (out / "hosts.yaml").write_text("hosts: []\n")
    inventory = tmp_path / "hosts"  # no suffix: the INI form, as /etc/ansible/hosts
    inventory.write_text("[web]\nweb1 ansible_host=10.0.0.1 ansible_port=2222\nweb2\n")

    code, output = run("inventory", "import", "ansible", inventory, "--known-hosts", known_hosts,
                       "--out", out, "--force")  # fmt: skip
    assert code == 1
    assert f"{inventory}: nothing written" in output
    assert "host web2: host_key: no key for web2 in known_hosts" in output
    assert "web1" not in output.replace(str(inventory), "")
    assert (out / "hosts.yaml").read_text() == "hosts: []\n"
    assert sorted(p.name for p in out.iterdir()) == ["hosts.yaml"]  # no temporary file left

    inventory.write_text("[web]\nweb1 ansible_host=10.0.0.1 ansible_port=2222\n")
    code, output = run("inventory", "import", "ansible", inventory, "--known-hosts", known_hosts,
                       "--out", out)  # fmt: skip
    assert (code, (out / "hosts.yaml").read_text()) == (1, "hosts: []\n")
    code, output = run("inventory", "import", "ansible", inventory, "--known-hosts", known_hosts,
                       "--out", out, "--force", "--json")  # fmt: skip
    assert code == 0, output
    assert [h.name for h in load_estate(out).hosts] == ["web1"]
    assert sorted(p.name for p in out.iterdir()) == ["hosts.yaml"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"\xff\xfe[web]\n", "not UTF-8 text (byte 0)", id="binary"),
        pytest.param(b"#" * (4 * 1024 * 1024 + 1), "larger than 4 MiB", id="too-large"),
        pytest.param(None, "No such file or directory", id="missing"),
    ],
)
def test_unreadable_inventories_are_named(
    tmp_path: Path, known_hosts: Path, content: bytes | None, expected: str
) -> None:
    inventory = tmp_path / "inventory.ini"
    if content is not None:
        inventory.write_bytes(content)
    code, output = run("inventory", "import", "ansible", inventory, "--known-hosts", known_hosts,
                       "--out", tmp_path / "estate")  # fmt: skip
    assert code == 1
    assert f"inventory {inventory}: {expected}" in output
    assert not (tmp_path / "estate").exists()


def test_a_long_refusal_is_counted(tmp_path: Path, known_hosts: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("web:\n  hosts:\n    web[001:150].example.com:\n")
    code, output = run("inventory", "import", "ansible", inventory, "--known-hosts", known_hosts,
                       "--out", tmp_path)  # fmt: skip
    assert code == 1
    assert f"{inventory}: nothing written, 150 problem(s):" in output
    assert "host web100.example.com: host_key: no key for web100.example.com" in output
    assert "web101.example.com" not in output
    assert output.rstrip().endswith("… and 50 more")
