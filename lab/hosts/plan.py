"""The plan of a lab's hosts: names, groups, loopback addresses, ports, account ids and keys.

Starting a lab and writing an estate for hosts that need not run (bench) both begin here.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from opsflow.errors import LabError

SSH_PORT = 2222
APP_PORT = 18080
ACCOUNT_IDS_BASE = 1_000_000_000
ACCOUNT_IDS_PER_HOST = 1000


@dataclass(frozen=True)
class Plan:
    name: str
    address: str
    groups: tuple[str, ...]
    root: Path


def host_addresses(hosts: int, base_address: str) -> list[str]:
    """The hosts' loopback addresses: base_address, then +1 in the last octet per host."""
    try:
        base = ipaddress.IPv4Address(base_address)
    except ValueError:
        raise LabError(f"base address {base_address!r} is not an IPv4 address") from None
    if not base.is_loopback:
        raise LabError(f"base address {base} is not a loopback address (127.0.0.0/8)")
    if not 1 <= hosts <= 250:
        raise LabError(f"a lab has 1 to 250 hosts, not {hosts}")
    first = int(str(base).rsplit(".", 1)[1])
    if first == 0 or first + hosts - 1 > 254:
        raise LabError(
            f"{hosts} hosts from {base} do not fit in the last octet (1-254); "
            "choose a lower base address or fewer hosts"
        )
    return [str(base + i) for i in range(hosts)]


def account_ids(address: str) -> range:
    """The uids and gids `useradd` gives new accounts on the lab host at `address`.

    Lab hosts share the machine's one process table, and revoking access kills an
    account's processes by uid in every namespace; so a uid must belong to one lab host
    only. Each host's range is its own, from its loopback address (unique among running
    labs), and lies far above the machine's own accounts and subordinate ids.
    """
    index = int(ipaddress.IPv4Address(address)) & 0xFFFFF
    first = ACCOUNT_IDS_BASE + index * ACCOUNT_IDS_PER_HOST
    return range(first, first + ACCOUNT_IDS_PER_HOST)


def keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at `path` (no passphrase); return the public key line."""
    result = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(f"ssh-keygen for {path} failed: {result.stderr.strip()}")
    return path.with_name(path.name + ".pub").read_text().strip()
