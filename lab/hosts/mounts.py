"""The real directories every host mounts over, shared by all labs on the machine: creating
them, serialising labs around them, and removing them once no lab uses them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from opsflow.errors import LabError
from opsflow.lab.hosts.probes import poll
from opsflow.lab.hosts.state import mount_namespace

SHARED_MOUNT_POINTS = ("/var/lib/app", "/var/log/app")
"""Directories every host mounts over; they must exist (empty) on the real filesystem."""

_CREATED_XATTR = "trusted.opsflow-lab"


@contextlib.contextmanager
def mount_point_lock(timeout: float = 30.0) -> Iterator[None]:
    """Serialise labs creating, mounting over and removing the shared mount points.

    Without it, one lab going down could remove /var/lib/app between another lab creating
    its namespaces and mounting over it. The lock is an flock on /var/lib: nothing to clean.
    """
    fd = os.open("/var/lib", os.O_RDONLY | os.O_DIRECTORY)
    try:

        def locked() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        poll("another lab to finish starting or stopping", locked, timeout, interval=0.02)
        yield
    finally:
        os.close(fd)


def ensure_mount_points() -> list[str]:
    """Create the real directories hosts mount over; return those this call created."""
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    created = []
    for path in SHARED_MOUNT_POINTS:
        directory = Path(path)
        if directory.is_dir():
            continue
        if directory.exists():
            raise LabError(f"{path} exists and is not a directory; the lab mounts over it")
        directory.mkdir(mode=0o755, parents=True)
        # Marked so whichever lab goes down last removes it, even if another lab created it.
        with contextlib.suppress(OSError):
            os.setxattr(path, _CREATED_XATTR, b"1")
        created.append(path)
    return created


def _mount_points_in_use(paths: Iterable[str]) -> set[str]:
    """Which of `paths` are mount points in any live mount namespace (other labs')."""
    wanted = set(paths)
    seen_ns: set[int] = set()
    in_use: set[str] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ns = mount_namespace(entry.name)
        if ns is None or ns in seen_ns:
            continue
        seen_ns.add(ns)
        try:
            mountinfo = Path(f"/proc/{entry.name}/mountinfo").read_text()
        except OSError:
            continue
        for line in mountinfo.splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4] in wanted:
                in_use.add(fields[4])
    return in_use


def remove_mount_points(created: Iterable[str]) -> None:
    """Remove the real mount-point dirs a lab created, once no lab mounts over them.

    rmdir on a directory another namespace mounts over succeeds and detaches that mount, so
    a directory still used by another running lab must stay.
    """
    candidates = []
    for path in SHARED_MOUNT_POINTS:
        try:
            marked = os.getxattr(path, _CREATED_XATTR) == b"1"
        except OSError:
            marked = False
        if (path in created or marked) and os.path.isdir(path) and not os.listdir(path):
            candidates.append(path)
    in_use = _mount_points_in_use(candidates)
    for path in candidates:
        if path not in in_use:
            with contextlib.suppress(OSError):
                os.rmdir(path)
