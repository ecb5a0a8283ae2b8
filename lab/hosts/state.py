"""A lab's state file and what it says: the lab and its hosts, read back, and whether each
host's sshd still runs in the mount namespace recorded for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsflow.errors import LabError
from opsflow.settings import get_settings

STATE_FILE = "lab.json"


@dataclass(frozen=True)
class LabHost:
    """One lab host: where it listens and where its private files live."""

    name: str
    address: str
    ssh_port: int
    app_port: int
    sshd_pid: int | None
    """PID of the host's sshd, or None when it is no longer running."""
    root: Path
    """The host's directory: keys, sshd log, overlay upper dir and private dirs."""


@dataclass(frozen=True)
class Lab:
    """A lab: its directory, its hosts, the estate it wrote and the key that logs in."""

    directory: Path
    hosts: list[LabHost]
    estate_dir: Path
    client_key: Path
    """Private ed25519 key without passphrase, authorized for root on every host."""

    def host(self, name: str) -> LabHost:
        """The lab host called `name`; LabError names it when there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"no host {name!r} in the lab at {self.directory}")


def app_admin_token_file(directory: Path) -> Path:
    """Where a lab keeps the bearer token of its apps' admin API (the same on every host)."""
    return directory / "app-admin-token"


def lab_dir(directory: Path | str | None) -> Path:
    path = Path(directory) if directory is not None else get_settings().lab_dir
    return path.expanduser().resolve()


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def read_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the lab state {path}: {exc}") from exc


def write_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(directory / STATE_FILE)


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T, Z…), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def mount_namespace(pid: int | str) -> int | None:
    """The inode of a process's mount namespace; None if it is gone or a zombie."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def alive_in(pid: int | None, mnt_ns: int | None) -> bool:
    """Whether `pid` still runs inside the mount namespace recorded for it."""
    if pid is None or mnt_ns is None or mount_namespace(pid) != mnt_ns:
        return False
    return proc_state(pid) not in (None, "Z")


def from_this_boot(state: dict[str, Any]) -> bool:
    return state.get("boot_id") == boot_id()


def _host_from_record(directory: Path, record: dict[str, Any], alive: bool) -> LabHost:
    return LabHost(
        name=record["name"],
        address=record["address"],
        ssh_port=record["ssh_port"],
        app_port=record["app_port"],
        sshd_pid=record["sshd_pid"] if alive else None,
        root=directory / "hosts" / record["name"],
    )


def lab_state(directory: Path | None = None) -> Lab:
    """Read back the lab in `directory` from its state file; LabError if there is none.

    A host whose sshd is no longer running has `sshd_pid` None.
    """
    directory = lab_dir(directory)
    state = read_state(directory)
    if state is None or "hosts" not in state:
        raise LabError(f"no lab in {directory} (start one with `opsflow lab up`)")
    same_boot = from_this_boot(state)
    hosts = [
        _host_from_record(directory, r, same_boot and alive_in(r.get("sshd_pid"), r.get("mnt_ns")))
        for r in state["hosts"]
    ]
    return Lab(
        directory=directory,
        hosts=hosts,
        estate_dir=directory / "estate",
        client_key=directory / "client_key",
    )


def running_record(directory: Path, host: str) -> dict[str, Any]:
    state = read_state(directory)
    if state is None or "hosts" not in state:
        raise LabError(f"no lab in {directory} (start one with `opsflow lab up`)")
    for record in state["hosts"]:
        if record["name"] == host:
            if not (from_this_boot(state) and alive_in(record["sshd_pid"], record["mnt_ns"])):
                raise LabError(f"{host}: its sshd is not running (restart the lab: lab up)")
            return record
    names = ", ".join(r["name"] for r in state["hosts"])
    raise LabError(f"no host {host!r} in the lab at {directory} (hosts: {names})")
