"""Starting a lab: checks, keys, host files and estate, then each host's sshd in new
namespaces and its app, cleaning up whatever a failed start leaves behind.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from opsflow.errors import LabError
from opsflow.lab.hosts.checks import (
    check_lab_dir,
    check_ports_free,
    require_programs,
    require_root,
)
from opsflow.lab.hosts.down import CHILDREN, lab_down
from opsflow.lab.hosts.estate import write_estate
from opsflow.lab.hosts.layout import namespace_script, write_host_files
from opsflow.lab.hosts.mounts import ensure_mount_points, mount_point_lock
from opsflow.lab.hosts.plan import APP_PORT, SSH_PORT, Plan, host_addresses, keygen
from opsflow.lab.hosts.probes import app_health, poll, ssh_banner
from opsflow.lab.hosts.run import SVC, clean_env, nsenter
from opsflow.lab.hosts.state import (
    Lab,
    app_admin_token_file,
    boot_id,
    lab_dir,
    lab_state,
    mount_namespace,
    read_state,
    write_state,
)

logger = logging.getLogger(__name__)

LOG_SIZE_MIB = 32
"""Default size of each host's private /var/log/app tmpfs: small, so `disk` fills it fast."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn_sshd(plan: Plan, log_size_mib: int) -> subprocess.Popen[bytes]:
    with open(plan.root / "sshd.log", "ab") as log:
        proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                namespace_script(plan, log_size_mib),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            env=clean_env(),
        )
    CHILDREN[proc.pid] = proc
    return proc


def _died(plan: Plan, proc: subprocess.Popen[bytes]) -> LabError:
    return LabError(
        f"{plan.name}: sshd exited with status {proc.returncode} while starting; "
        f"{plan.root / 'sshd.log'} ends with:\n{_tail(plan.root / 'sshd.log')}"
    )


def _await_namespaces(plans: list[Plan], procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """Poll until each sshd process is inside its own new mount namespace; return inodes."""
    own = mount_namespace("self")
    found: dict[int, int] = {}

    def check() -> bool:
        for i, (plan, proc) in enumerate(zip(plans, procs, strict=True)):
            if i in found:
                continue
            if proc.poll() is not None:
                raise _died(plan, proc)
            ns = mount_namespace(proc.pid)
            if ns is not None and ns != own:
                found[i] = ns
        return len(found) == len(plans)

    poll("the hosts' mount namespaces", check, timeout=10)
    return [found[i] for i in range(len(plans))]


def _await_ssh(plans: list[Plan], procs: list[subprocess.Popen[bytes]]) -> None:
    pending = dict(enumerate(plans))

    def check() -> bool:
        for i, plan in list(pending.items()):
            if procs[i].poll() is not None:
                raise _died(plan, procs[i])
            if ssh_banner(plan.address, timeout=1.0):
                del pending[i]
        return not pending

    poll("every host's ssh port to answer", check, timeout=10 + 0.2 * len(plans))


def _start_apps(plans: list[Plan], pids: list[int]) -> None:
    def start(plan: Plan, pid: int) -> str | None:
        result = nsenter(plan.name, pid, [SVC, "start"], timeout=30)
        if result.returncode != 0:
            return f"{plan.name}: svc start exited {result.returncode}: " + (
                result.stderr.strip() or result.stdout.strip()
            )
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(plans))) as pool:
        problems = [p for p in pool.map(start, plans, pids) if p]
    if problems:
        raise LabError("the app did not start:\n" + "\n".join(problems))

    pending = {p.name: p for p in plans}

    def check() -> bool:
        for name, plan in list(pending.items()):
            answer = app_health(plan.address, timeout=1.0)
            if answer and answer.get("host") == name:
                del pending[name]
        return not pending

    poll("every host's app to answer /health", check, timeout=10 + 0.2 * len(plans))


def lab_up(
    directory: Path | None = None,
    hosts: int = 5,
    base_address: str = "127.0.10.1",
    *,
    log_size_mib: int = LOG_SIZE_MIB,
) -> Lab:
    """Start a lab of `hosts` sshd hosts with the app running, and write its estate.

    A lab already running in `directory` is torn down first, so `lab up` always yields a
    fresh lab. Labs in other directories keep running; they need other addresses.

    Args:
        directory: Where the lab keeps its state; default `get_settings().lab_dir`.
        hosts: How many hosts (lab01, lab02, ...).
        base_address: Loopback address of lab01; each next host adds 1 to the last octet.
        log_size_mib: Size of each host's /var/log/app tmpfs.
    """
    require_root()
    require_programs()
    directory = lab_dir(directory)
    check_lab_dir(directory)
    addresses = host_addresses(hosts, base_address)
    if not 1 <= log_size_mib <= 1024:
        raise LabError(f"log_size_mib must be 1 to 1024, not {log_size_mib}")
    if read_state(directory) is not None:
        logger.info("a lab is already in %s: tearing it down first", directory)
        lab_down(directory)
    elif directory.exists() and any(directory.iterdir()):
        raise LabError(f"{directory} is not empty and holds no lab; refusing to use it")
    check_ports_free(addresses)

    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    plans = [
        Plan(
            name=f"lab{i:02d}",
            address=address,
            groups=("lab", "web" if i % 2 else "db"),
            root=directory / "hosts" / f"lab{i:02d}",
        )
        for i, address in enumerate(addresses, 1)
    ]
    # Written first, so lab_down can clean up whatever a failed start leaves behind.
    state: dict[str, Any] = {
        "version": 1,
        "boot_id": boot_id(),
        "base_address": base_address,
        "log_size_mib": log_size_mib,
        "created_dirs": [],
        "hosts": [],
    }
    write_state(directory, state)
    procs: list[subprocess.Popen[bytes]] = []
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(mount_point_lock())
        state["created_dirs"] = ensure_mount_points()
        write_state(directory, state)
        for plan in plans:
            (plan.root / "etc-upper" / "ssh").mkdir(parents=True)
        with ThreadPoolExecutor(max_workers=8) as pool:
            client_future = pool.submit(keygen, directory / "client_key", "opsflow-lab-client")
            key_futures = {
                p.name: pool.submit(
                    keygen, p.root / "etc-upper" / "ssh" / "ssh_host_ed25519_key", p.name
                )
                for p in plans
            }
            client_public = client_future.result()
            host_keys = {name: f.result() for name, f in key_futures.items()}
        app_server = resources.files("opsflow.lab").joinpath("app_server.py").read_bytes()
        svc = resources.files("opsflow.lab").joinpath("files/svc").read_bytes()
        hosts_file = Path("/etc/hosts").read_text()
        admin_token = secrets.token_urlsafe(24)
        token_path = app_admin_token_file(directory)
        token_path.touch(mode=0o600)
        token_path.write_text(admin_token)
        for plan in plans:
            write_host_files(plan, client_public, app_server, svc, hosts_file, admin_token)
        write_estate(directory / "estate", plans, host_keys)

        procs = [_spawn_sshd(plan, log_size_mib) for plan in plans]
        namespaces = _await_namespaces(plans, procs)
        state["hosts"] = [
            {
                "name": plan.name,
                "address": plan.address,
                "ssh_port": SSH_PORT,
                "app_port": APP_PORT,
                "groups": list(plan.groups),
                "sshd_pid": proc.pid,
                "mnt_ns": ns,
            }
            for plan, proc, ns in zip(plans, procs, namespaces, strict=True)
        ]
        write_state(directory, state)
        _await_ssh(plans, procs)  # sshd answering means its mounts are in place
        lock.close()
        _start_apps(plans, [proc.pid for proc in procs])
    except BaseException:
        lock.close()
        if not state["hosts"]:
            # Namespaces not recorded yet, and nothing but sshd lives in them so far.
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            for proc in procs:
                proc.wait(timeout=10)
        try:
            lab_down(directory)
        except LabError:
            logger.exception("cleaning up the half-started lab in %s failed", directory)
        raise
    logger.info(
        "lab of %d hosts up in %s after %.2fs", len(plans), directory, time.monotonic() - started
    )
    return lab_state(directory)
