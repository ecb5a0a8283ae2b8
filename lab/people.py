"""The lab's people, teams and event rules: tokens made fresh per lab, only their hashes kept.

The tokens themselves go to files under the lab directory (mode 0600), one per person, for
the CLI, the tests and Alertmanager's webhook to authenticate with.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import TypedDict

import yaml

from opsflow.inventory.models import token_sha256


class Person(TypedDict):
    """One of the lab's people, as people.yaml lists them (without their token's hash)."""

    name: str
    full_name: str
    team: str
    roles: list[str]


PEOPLE: list[Person] = [
    {"name": "alice", "full_name": "Alice Oncall", "team": "ops", "roles": ["operator"]},
    {"name": "bob", "full_name": "Bob Approver", "team": "ops", "roles": ["approver"]},
    {"name": "carol", "full_name": "Carol User", "team": "users", "roles": ["requester"]},
    {"name": "alertmanager", "full_name": "Lab Alertmanager", "team": "ops", "roles": ["monitor"]},
    {"name": "routine-jobs", "full_name": "Routine jobs", "team": "ops", "roles": ["monitor"]},
]
TEAMS = [
    {"name": "ops", "on_call": "alice", "notify_block": "custom-webhook/ops-pager"},
    {"name": "users", "notify_block": "custom-webhook/ops-pager"},
]
RULES = [
    {
        "name": "service-down",
        "match": {"alertname": "ServiceDown"},
        "class": "exception",
        "symptom": "service-down",
        "urgency": 1,
    },
    {
        "name": "service-hung",
        "match": {"alertname": "ServiceHung"},
        "class": "exception",
        "symptom": "service-hung",
        "urgency": 1,
    },
    {
        "name": "log-filesystem-full",
        "match": {"alertname": "LogFilesystemFull"},
        "class": "exception",
        "symptom": "disk-full",
        "urgency": 2,
    },
    {
        "name": "instance-down",
        "matchers": ['alertname="InstanceDown"', 'job=~"app|app-.+"'],
        "class": "exception",
        "symptom": "service-down",
        "urgency": 1,
    },
    {
        "name": "watchdog",
        "match": {"alertname": "Watchdog"},
        "class": "informational",
    },
]


def key_file(lab_dir: Path, person: str) -> Path:
    """Where the lab keeps `person`'s SSH private key; the public key is in people.yaml."""
    return lab_dir / "keys" / person


def _person_key(lab_dir: Path, person: str) -> str:
    """Make a fresh ed25519 key for `person` and return its public half."""
    path = key_file(lab_dir, person)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in (path, path.with_name(person + ".pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"{person}@opsflow-lab",
            "-f",
            str(path),
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )
    return path.with_name(person + ".pub").read_text().strip()


def token_file(lab_dir: Path, person: str) -> Path:
    """Where the lab keeps `person`'s API token."""
    return lab_dir / "tokens" / person


def write_people_and_rules(estate_dir: Path, lab_dir: Path) -> dict[str, str]:
    """Write people.yaml and rules.yaml into the lab's estate; return each person's token."""
    tokens_dir = lab_dir / "tokens"
    tokens_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tokens: dict[str, str] = {}
    people = []
    for person in PEOPLE:
        token = secrets.token_urlsafe(32)
        tokens[person["name"]] = token
        path = token_file(lab_dir, person["name"])
        path.write_text(token)
        os.chmod(path, 0o600)
        entry: dict[str, object] = {**person, "token_sha256": token_sha256(token)}
        if "monitor" not in person["roles"]:
            entry["ssh_public_key"] = _person_key(lab_dir, person["name"])
        people.append(entry)
    (estate_dir / "people.yaml").write_text(
        yaml.safe_dump({"people": people, "teams": TEAMS}, sort_keys=False)
    )
    (estate_dir / "rules.yaml").write_text(yaml.safe_dump({"rules": RULES}, sort_keys=False))
    return tokens
