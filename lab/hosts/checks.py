"""What starting a lab needs, checked before anything starts: root, the programs, a usable
directory and free addresses, so a lab that cannot start says why instead of half-starting.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable
from pathlib import Path

from opsflow.errors import LabError
from opsflow.lab.hosts.mounts import SHARED_MOUNT_POINTS
from opsflow.lab.hosts.plan import APP_PORT, SSH_PORT

_PROGRAMS = {
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/bin/unshare": "util-linux",
    "/usr/bin/nsenter": "util-linux",
    "/usr/bin/mount": "mount",
    "/usr/bin/python3": "python3",
}
_ROOT_MESSAGE = (
    "the lab needs root: each lab host runs sshd in its own mount and UTS namespaces "
    "(private /etc, /home, /root, /var/lib/app, /var/log/app and hostname), and only root "
    "can create those. Run it as root, e.g. `sudo .venv/bin/opsflow lab up`, or inside a "
    "root container (effective uid is {euid})."
)


def require_root(euid: int | None = None) -> None:
    """Raise LabError explaining why root is needed unless `euid` (default: ours) is 0."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise LabError(_ROOT_MESSAGE.format(euid=euid))


def require_programs() -> None:
    missing = [
        f"{path} (package {pkg})" for path, pkg in _PROGRAMS.items() if not os.access(path, os.X_OK)
    ]
    if missing:
        raise LabError("the lab needs programs that are not installed: " + ", ".join(missing))


def check_lab_dir(directory: Path) -> None:
    # The host dirs become overlayfs options, where ',' and ':' are separators.
    if any(c in str(directory) for c in ",:\\") or any(c.isspace() for c in str(directory)):
        raise LabError(
            f"lab directory {directory} holds a character overlayfs options cannot carry "
            "(',', ':', '\\' or whitespace); choose another directory"
        )
    for mount_point in SHARED_MOUNT_POINTS:
        if directory.is_relative_to(mount_point):
            raise LabError(f"lab directory {directory} is inside {mount_point}, which hosts hide")


def check_ports_free(addresses: Iterable[str]) -> None:
    """Fail before starting anything if another lab or program already listens there."""
    busy = []
    for address in addresses:
        for port in (SSH_PORT, APP_PORT):
            with socket.socket() as sock:
                # SO_REUSEADDR: only a listener makes bind fail, not old TIME_WAIT connections.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address, port))
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise LabError(f"cannot use {address}:{port}: {exc.strerror}") from exc
                    busy.append(f"{address}:{port}")
    if busy:
        raise LabError(
            "addresses already in use (another lab on the same base address?): " + ", ".join(busy)
        )
