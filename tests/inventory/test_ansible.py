"""Ansible inventories, as teams write them and as an attacker might, into opsflow hosts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from opsflow.errors import InventoryError
from opsflow.inventory.ansible import hosts_from_ansible, render_hosts
from opsflow.inventory.known_hosts import KnownHosts
from opsflow.inventory.loader import load_estate
from opsflow.inventory.models import Host
from tests.support.inventories import HOSTILE_INVENTORIES, Hostile

YAML_INVENTORY = """
all:
  vars:
    ansible_user: deploy
  children:
    prod:
      vars:
        ansible_port: 2200
      children:
        web:
          hosts:
            web[01:02].example.com:
            web3:
              ansible_host: 10.0.0.3
              ansible_port: "2222"
          vars:
            ansible_user: www
        db:
          hosts:
            db1:
              ansible_host: 10.0.1.1
              ansible_ssh_user: postgres
    canary:
      hosts:
        web3:
        edge:2201:
          ansible_host: 10.0.2.1
"""

INI_INVENTORY = """
# the same estate, in the INI form
edge:2201 ansible_host=10.0.2.1  # a comment

[web]
web[01:02].example.com
web3 ansible_host=10.0.0.3 ansible_port="2222"  # quoted, as INI allows

[web:vars]
ansible_user=www

[db]
db1 ansible_host=10.0.1.1 ansible_ssh_user=postgres

[prod:children]
web
db

[prod:vars]
ansible_port=2200

[canary]
web3
edge:2201

[all:vars]
ansible_user='deploy'
"""


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def known(key: str) -> KnownHosts:
    names = "[web01.example.com]:2200,[web02.example.com]:2200,[10.0.0.3]:2222,[10.0.1.1]:2200"
    return KnownHosts.parse(f"{names},[10.0.2.1]:2201 {key}\n")


def summary(hosts: list[Host]) -> dict[str, tuple]:
    return {h.name: (h.address, h.port, h.user, tuple(h.groups)) for h in hosts}


EXPECTED = {
    "web01.example.com": ("web01.example.com", 2200, "www", ("prod", "web")),
    "web02.example.com": ("web02.example.com", 2200, "www", ("prod", "web")),
    "web3": ("10.0.0.3", 2222, "www", ("canary", "prod", "web")),
    "db1": ("10.0.1.1", 2200, "deploy", ("db", "prod")),  # ansible_user beats ansible_ssh_user
    "edge": ("10.0.2.1", 2201, "deploy", ("canary",)),
}


def test_yaml_inventory_with_nested_children_and_group_vars(known: KnownHosts, key: str) -> None:
    hosts = hosts_from_ansible(YAML_INVENTORY, "yaml", known)
    assert summary(hosts) == EXPECTED
    assert {h.host_key for h in hosts} == {key}


def test_ini_inventory_reads_the_same(known: KnownHosts) -> None:
    assert summary(hosts_from_ansible(INI_INVENTORY, "ini", known)) == EXPECTED


def test_json_is_yaml_too(known: KnownHosts) -> None:
    inventory = {"web": {"hosts": {"web3": {"ansible_host": "10.0.0.3", "ansible_port": 2222}}}}
    hosts = hosts_from_ansible(json.dumps(inventory), "yaml", known)
    assert summary(hosts) == {"web3": ("10.0.0.3", 2222, "root", ("web",))}


def test_old_spellings_count_where_the_new_are_not_set(known: KnownHosts) -> None:
    inventory = "[db]\ndb1 ansible_ssh_host=10.0.1.1 ansible_ssh_port=2200 ansible_ssh_user=pg\n"
    assert summary(hosts_from_ansible(inventory, "ini", known)) == {
        "db1": ("10.0.1.1", 2200, "pg", ("db",))
    }


def test_written_hosts_load_as_an_estate(tmp_path: Path, known: KnownHosts) -> None:
    hosts = hosts_from_ansible(YAML_INVENTORY, "yaml", known, credentials="prod-ssh")
    (tmp_path / "hosts.yaml").write_text(render_hosts(hosts))
    estate = load_estate(tmp_path)
    assert summary(estate.hosts) == EXPECTED
    assert {h.credentials for h in estate.hosts} == {"prod-ssh"}
    assert estate.hosts == hosts


def problems(text: str, known: KnownHosts, form: str = "yaml") -> list[str]:
    with pytest.raises(InventoryError) as caught:
        hosts_from_ansible(text, form, known)  # type: ignore[arg-type]
    return caught.value.problems


def test_every_refused_host_is_named_with_its_reason(known: KnownHosts) -> None:
    text = (
        YAML_INVENTORY
        + """
    stray:
      hosts:
        nokey: {ansible_host: 10.9.9.9}
        templated: {ansible_host: "{{ inventory_hostname }}.example.com"}
        badport: {ansible_host: 10.0.0.3, ansible_port: 70000}
        flagport: {ansible_port: yes}
        baduser: {ansible_user: "root; rm -rf /"}
        badaddress: {ansible_host: "10.0.0.1 -oProxyCommand=x"}
        local: {ansible_connection: local}
        Upper:
    Mixed_Case:
      hosts:
        web3:
"""
    )
    assert problems(text, known) == [
        "group Mixed_Case: not an opsflow name: lower-case letters, digits, '-', '_' and '.', "
        "starting alphanumeric, at most 63",
        "host nokey: host_key: no key for 10.9.9.9 in known_hosts",
        "host templated: address (from ansible_host '{{ inventory_hostname }}.example.com'): "
        "a template; opsflow does not evaluate Jinja, give the value itself",
        "host badport: port (from ansible_port 70000): Input should be less than or equal to 65535",
        "host flagport: port (from ansible_port True): not a port number",
        "host baduser: user (from ansible_user 'root; rm -rf /'): 'root; rm -rf /': "
        "String should match pattern '^[a-z_][a-z0-9_-]{0,31}$'",
        "host badaddress: address (from ansible_host '10.0.0.1 -oProxyCommand=x'): "
        "'10.0.0.1 -oProxyCommand=x' is neither an IP address nor a DNS name",
        "host local: ansible_connection 'local': opsflow reaches hosts over SSH only "
        "(ssh, paramiko, smart)",
        "host Upper: name: 'Upper': String should match pattern '^[a-z0-9][a-z0-9_.-]{0,62}$'",
    ]


def test_two_hosts_at_one_address_and_port(known: KnownHosts) -> None:
    text = "web:\n  hosts:\n    a: {ansible_host: 10.0.0.3, ansible_port: 2222}\n"
    text += "    b: {ansible_host: 10.0.0.3, ansible_port: 2222}\n"
    assert problems(text, known) == ["host b: address 10.0.0.3 port 2222 is host a's too"]


@pytest.mark.parametrize("hostile", HOSTILE_INVENTORIES.values(), ids=HOSTILE_INVENTORIES.keys())
def test_hostile_or_broken_inventories_are_refused(known: KnownHosts, hostile: Hostile) -> None:
    found = problems(hostile.text, known, hostile.form)
    assert any(hostile.expected in p for p in found), found
