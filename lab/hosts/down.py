"""Stopping a lab: every process in its hosts' namespaces and under their accounts' uids, then
its directory and the shared mount points no other lab still uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from opsflow.errors import LabError
from opsflow.lab.hosts.checks import require_root
from opsflow.lab.hosts.mounts import mount_point_lock, remove_mount_points
from opsflow.lab.hosts.plan import account_ids
from opsflow.lab.hosts.probes import poll
from opsflow.lab.hosts.state import STATE_FILE, from_this_boot, lab_dir, mount_namespace, read_state

logger = logging.getLogger(__name__)

# sshd processes this Python process started; kept so lab_down can reap them (no zombies,
# no "subprocess still running" warnings) when the same process tears the lab down.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _mountinfo_escape(path: Path) -> str:
    text = str(path)
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        text = text.replace(char, code)
    return text


def _namespace_owner(host_root: Path) -> Callable[[int], bool | None]:
    """A check whether a PID's mount namespace is the lab host's at `host_root`.

    Namespace inode numbers are reused as soon as a namespace is freed, so a recorded inode
    alone may name someone else's namespace; the host's overlay upper dir in the mount
    table proves it is ours. The check answers None when the process is gone.
    """
    marker = f"upperdir={_mountinfo_escape(host_root)}/etc-upper,"

    def check(pid: int) -> bool | None:
        try:
            return marker in Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            return None

    return check


def _pids_by_namespace(namespaces: Iterable[int]) -> dict[int, list[int]]:
    wanted = set(namespaces)
    found: dict[int, list[int]] = {ns: [] for ns in wanted}
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        ns = mount_namespace(entry.name)
        if ns in wanted:
            found[ns].append(int(entry.name))
    return found


def _reap_children() -> None:
    for pid, proc in list(CHILDREN.items()):
        if proc.poll() is not None:
            del CHILDREN[pid]


def _stop_namespaces(targets: dict[int, Path]) -> None:
    """Kill every process in the given mount namespaces: TERM (and CONT), then KILL.

    The app is not a child of sshd, so killing sshd alone would leave it (and the namespace
    with its mounts) alive; every member of the namespace has to go. Each process is checked
    to be in *our* namespace right before it is signalled: once a namespace is freed, another
    lab starting meanwhile may get the same inode number.
    """
    protected = {mount_namespace("self"), mount_namespace(1)}
    owners = {ns: _namespace_owner(root) for ns, root in targets.items() if ns not in protected}
    if not owners:
        return

    def remaining() -> list[int]:
        _reap_children()
        return [
            pid
            for ns, pids in _pids_by_namespace(owners).items()
            for pid in pids
            if owners[ns](pid)
        ]

    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        pids = remaining()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    # A SIGSTOPped process (break_host hang) acts on TERM only once continued.
                    os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(LabError):
            poll("the lab's processes to exit", lambda: not remaining(), wait)
    left = remaining()
    if left:
        raise LabError(f"lab processes survived SIGKILL: {left}")


def _stop_accounts(addresses: Iterable[str]) -> None:
    """SIGKILL every process running as one of the hosts' accounts, wherever it runs.

    A user's process may have left its host's mount namespace (`unshare`, bwrap), where
    stopping the namespace does not reach it; the host's own uid range does.
    """
    ranges = [account_ids(address) for address in addresses]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        uids = next(
            (line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), []
        )
        if any(int(uid) in ids for uid in uids for ids in ranges):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def lab_down(directory: Path | None = None) -> None:
    """Stop every process of the lab in `directory` and remove the directory entirely.

    Idempotent: no lab (or no directory) is not an error. Mounts vanish with the hosts'
    namespaces once their last process is gone. A non-empty directory without a lab state
    file is refused rather than deleted.
    """
    require_root()
    directory = lab_dir(directory)
    if not directory.exists():
        return
    state = read_state(directory)
    if state is None:
        if any(directory.iterdir()):
            raise LabError(
                f"{directory} holds no lab state file ({STATE_FILE}); "
                "refusing to delete a directory the lab did not make"
            )
        directory.rmdir()
        return
    from opsflow.lab.monitoring import monitoring_down

    monitoring_down(directory / "monitoring")
    started = time.monotonic()
    if from_this_boot(state):
        targets = {
            record["mnt_ns"]: directory / "hosts" / record["name"]
            for record in state.get("hosts", [])
            if record.get("mnt_ns")
        }
        _stop_accounts(record["address"] for record in state.get("hosts", []))
        _stop_namespaces(targets)
        for record in state.get("hosts", []):
            child = CHILDREN.pop(record.get("sshd_pid"), None)
            if child is not None:
                try:
                    child.wait(timeout=5)  # our own child: reap it rather than leave a zombie
                except subprocess.TimeoutExpired as exc:
                    raise LabError(f"sshd {child.pid} of {record['name']} did not exit") from exc
    shutil.rmtree(directory)
    with mount_point_lock():
        remove_mount_points(state.get("created_dirs", []))
    logger.info("lab in %s down after %.2fs", directory, time.monotonic() - started)
