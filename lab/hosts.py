"""A local estate of real sshd hosts on loopback, each with its own filesystem view and hostname.

Every lab host is one OpenSSH daemon listening on its own loopback address, started inside
its own mount and UTS namespace: an overlay over `/etc`, private `/home`, `/root` and
`/var/lib/app` and cron spool, a small tmpfs over `/var/log/app` and its own hostname. Changes
made over SSH on one host (a new user, a full disk, a stopped service) are therefore invisible
on the others and on the real machine, so opsflow's flows can be tested against real hosts
and real failures. The hosts share the machine's process table, so each gives new accounts
uids no other host (nor the machine) uses: killing a user's processes by uid stays on its host.
`lab_up` also writes the estate (hosts, services, pinned host keys) that
`inventory.loader.load_estate` reads.

Creating mount and UTS namespaces needs root; `require_root` says so plainly.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from opsflow.errors import LabError
from opsflow.lab.catalog import write_catalog
from opsflow.lab.entitlements import write_entitlements
from opsflow.lab.people import write_people_and_rules
from opsflow.settings import get_settings

logger = logging.getLogger(__name__)

SSH_PORT = 2222
APP_PORT = 18080
LOG_SIZE_MIB = 32
"""Default size of each host's private /var/log/app tmpfs: small, so `disk` fills it fast."""

STATE_FILE = "lab.json"
SVC = "/var/lib/app/bin/svc"
CREDENTIALS = "opsflow-lab"
SHARED_MOUNT_POINTS = ("/var/lib/app", "/var/log/app")
"""Directories every host mounts over; they must exist (empty) on the real filesystem."""
CRON_SPOOL = Path("/var/spool/cron")
"""Users' crontabs and at jobs: private per host when the machine has cron or at installed."""
ACCOUNT_IDS_BASE = 1_000_000_000
ACCOUNT_IDS_PER_HOST = 1000

_CREATED_XATTR = "trusted.opsflow-lab"
_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
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

# sshd processes this Python process started; kept so lab_down can reap them (no zombies,
# no "subprocess still running" warnings) when the same process tears the lab down.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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


# --- checks -----------------------------------------------------------------------------


def require_root(euid: int | None = None) -> None:
    """Raise LabError explaining why root is needed unless `euid` (default: ours) is 0."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise LabError(_ROOT_MESSAGE.format(euid=euid))


def _require_programs() -> None:
    missing = [
        f"{path} (package {pkg})" for path, pkg in _PROGRAMS.items() if not os.access(path, os.X_OK)
    ]
    if missing:
        raise LabError("the lab needs programs that are not installed: " + ", ".join(missing))


def _lab_dir(directory: Path | str | None) -> Path:
    path = Path(directory) if directory is not None else get_settings().lab_dir
    return path.expanduser().resolve()


def _check_lab_dir(directory: Path) -> None:
    # The host dirs become overlayfs options, where ',' and ':' are separators.
    if any(c in str(directory) for c in ",:\\") or any(c.isspace() for c in str(directory)):
        raise LabError(
            f"lab directory {directory} holds a character overlayfs options cannot carry "
            "(',', ':', '\\' or whitespace); choose another directory"
        )
    for mount_point in SHARED_MOUNT_POINTS:
        if directory.is_relative_to(mount_point):
            raise LabError(f"lab directory {directory} is inside {mount_point}, which hosts hide")


def _host_addresses(hosts: int, base_address: str) -> list[str]:
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


def _check_ports_free(addresses: Iterable[str]) -> None:
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


# --- state ------------------------------------------------------------------------------


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _read_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the lab state {path}: {exc}") from exc


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(directory / STATE_FILE)


def _proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T, Z…), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _mnt_ns(pid: int | str) -> int | None:
    """The inode of a process's mount namespace; None if it is gone or a zombie."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _alive_in(pid: int | None, mnt_ns: int | None) -> bool:
    """Whether `pid` still runs inside the mount namespace recorded for it."""
    if pid is None or mnt_ns is None or _mnt_ns(pid) != mnt_ns:
        return False
    return _proc_state(pid) not in (None, "Z")


def _same_boot(state: dict[str, Any]) -> bool:
    return state.get("boot_id") == _boot_id()


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
    directory = _lab_dir(directory)
    state = _read_state(directory)
    if state is None or "hosts" not in state:
        raise LabError(f"no lab in {directory} (start one with `opsflow lab up`)")
    same_boot = _same_boot(state)
    hosts = [
        _host_from_record(directory, r, same_boot and _alive_in(r.get("sshd_pid"), r.get("mnt_ns")))
        for r in state["hosts"]
    ]
    return Lab(
        directory=directory,
        hosts=hosts,
        estate_dir=directory / "estate",
        client_key=directory / "client_key",
    )


def _record(directory: Path, host: str) -> dict[str, Any]:
    state = _read_state(directory)
    if state is None or "hosts" not in state:
        raise LabError(f"no lab in {directory} (start one with `opsflow lab up`)")
    for record in state["hosts"]:
        if record["name"] == host:
            if not (_same_boot(state) and _alive_in(record["sshd_pid"], record["mnt_ns"])):
                raise LabError(f"{host}: its sshd is not running (restart the lab: lab up)")
            return record
    names = ", ".join(r["name"] for r in state["hosts"])
    raise LabError(f"no host {host!r} in the lab at {directory} (hosts: {names})")


# --- running commands on hosts ------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    # The caller's environment (a venv, PYTHON* variables) must not leak into lab hosts.
    return {"PATH": _PATH_ENV, "LANG": "C.UTF-8", "HOME": "/root"}


def _nsenter(
    host: str, sshd_pid: int, argv: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["nsenter", "--target", str(sshd_pid), "--mount", "--uts", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
            cwd="/",
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{host}: {shlex.join(argv)!r} ran past {timeout:g}s") from exc


def run_on_host(
    host: str, argv: list[str], directory: Path | None = None, *, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (no shell) inside a lab host's namespaces, as the lab sees the host.

    This bypasses SSH on purpose: the lab uses it to set hosts up and break them, and tests
    use it as ground truth. The result is returned whatever the exit status; a timeout or a
    host whose sshd is not running raises LabError.
    """
    record = _record(_lab_dir(directory), host)
    return _nsenter(host, record["sshd_pid"], argv, timeout)


# --- probes -------------------------------------------------------------------------------


def ssh_banner(address: str, port: int = SSH_PORT, timeout: float = 1.0) -> str | None:
    """The SSH identification line the port sends, or None if nothing answers in time."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return line if line.startswith("SSH-") else None


def app_health(address: str, port: int = APP_PORT, timeout: float = 1.0) -> dict[str, Any] | None:
    """The app's /health answer as a dict, or None if it does not answer 200 in time."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        answer = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return answer if isinstance(answer, dict) else None


def _poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- building the lab ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    name: str
    address: str
    groups: tuple[str, ...]
    root: Path


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


def _login_defs(real: str, ids: range) -> str:
    """The machine's login.defs with the host's own id range, and no lastlog entries.

    /var/log/lastlog is the machine's, shared by every host; entries for ids this large
    would make it a huge sparse file.
    """
    settings = {
        "UID_MIN": ids.start,
        "UID_MAX": ids.stop - 1,
        "GID_MIN": ids.start,
        "GID_MAX": ids.stop - 1,
        "LASTLOG_UID_MAX": 0,
    }
    kept = [line for line in real.splitlines() if (line.split() or [""])[0] not in settings]
    return "\n".join([*kept, *(f"{key}\t{value}" for key, value in settings.items())]) + "\n"


def _private_cron_spool(root: Path) -> None:
    """A copy of the machine's cron spool without users' jobs.

    Its directories and dot files (at's job counter) keep their owners and modes, which
    crontab and at check.
    """
    spool = root / "var-spool-cron"
    spool.mkdir()
    for entry in CRON_SPOOL.iterdir():
        if not entry.is_dir() or entry.is_symlink():
            continue
        (spool / entry.name).mkdir()
        shutil.copystat(entry, spool / entry.name)
        info = entry.stat()
        os.chown(spool / entry.name, info.st_uid, info.st_gid)
        for state in entry.glob(".*"):
            if state.is_file() and not state.is_symlink():
                shutil.copy2(state, spool / entry.name / state.name)
                info = state.stat()
                os.chown(spool / entry.name / state.name, info.st_uid, info.st_gid)


def _keygen(path: Path, comment: str) -> str:
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


def _sshd_config(plan: _Plan) -> str:
    return f"""\
# sshd of lab host {plan.name}, written by opsflow's lab. Paths are as the host sees them:
# this file lives in the host's /etc overlay ({plan.root}/etc-upper/ssh/sshd_config).
ListenAddress {plan.address}
Port {SSH_PORT}
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /etc/ssh/sshd.pid
AuthorizedKeysFile /etc/ssh/lab_authorized_keys .ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
UseDNS no
MaxStartups 100:30:200
# curve25519 is far cheaper than OpenSSH 9's default post-quantum exchange; paramiko only
# knows it by its older name, hence both.
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
Subsystem sftp internal-sftp
PrintMotd no
"""


def _namespace_script(plan: _Plan, log_size_mib: int) -> str:
    """The shell run inside the new namespaces: private mounts, hostname, then exec sshd."""
    q = shlex.quote
    root = plan.root
    overlay = f"lowerdir=/etc,upperdir={root}/etc-upper,workdir={root}/etc-work"
    binds = [(root / "home", "/home"), (root / "root", "/root")]
    if (root / "var-spool-cron").is_dir():
        binds.append((root / "var-spool-cron", str(CRON_SPOOL)))
    # Bind last whatever hides the lab directory itself, so every source is still reachable.
    binds.sort(key=lambda b: root.is_relative_to(b[1]))
    lines = [
        "set -e",
        f"mount -t overlay overlay -o {q(overlay)} /etc",
        f"mount --bind {q(str(root / 'var-lib-app'))} /var/lib/app",
        f"mount -t tmpfs -o size={log_size_mib}m,mode=0755 lab-app-log /var/log/app",
        *(f"mount --bind {q(str(src))} {dst}" for src, dst in binds),
        f"echo {q(plan.name)} > /proc/sys/kernel/hostname",
        "exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config",
    ]
    return "\n".join(lines)


def _write_host_files(
    plan: _Plan, client_public: str, app_server: bytes, svc: bytes, hosts_file: str
) -> None:
    """Lay out a host's directory: overlay upper dir with its /etc files, private dirs."""
    root = plan.root
    for sub in ("etc-upper/ssh", "etc-upper/app", "etc-work", "home", "root", "var-lib-app/bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    etc = root / "etc-upper"
    (etc / "ssh" / "sshd_config").write_text(_sshd_config(plan))
    (etc / "ssh" / "lab_authorized_keys").write_text(client_public + "\n")
    (etc / "app" / "app.conf").write_text(
        f"ADDRESS={plan.address}\nPORT={APP_PORT}\nNAME={plan.name}\n"
    )
    (etc / "hostname").write_text(plan.name + "\n")
    (etc / "login.defs").write_text(
        _login_defs(Path("/etc/login.defs").read_text(), account_ids(plan.address))
    )
    if CRON_SPOOL.is_dir():
        _private_cron_spool(root)
    (etc / "hosts").write_text(hosts_file + f"{plan.address}\t{plan.name}\n")
    bin_dir = root / "var-lib-app" / "bin"
    (bin_dir / "app-server").write_bytes(app_server)
    (bin_dir / "svc").write_bytes(svc)
    (bin_dir / "app-server").chmod(0o755)
    (bin_dir / "svc").chmod(0o755)


def _write_estate(estate_dir: Path, plans: list[_Plan], host_keys: dict[str, str]) -> None:
    """Write the estate `inventory.loader.load_estate` reads: settings, hosts, service, keys."""
    estate_dir.mkdir(parents=True, exist_ok=True)
    (estate_dir / "estate.yaml").write_text(
        yaml.safe_dump({"name": "lab", "known_hosts": "known_hosts"}, sort_keys=False)
    )
    (estate_dir / "known_hosts").write_text(
        "".join(
            f"{p.name},[{p.address}]:{SSH_PORT} {' '.join(host_keys[p.name].split()[:2])}\n"
            for p in plans
        )
    )
    hosts = [
        {
            "name": p.name,
            "address": p.address,
            "port": SSH_PORT,
            "user": "root",
            "credentials": CREDENTIALS,
            "groups": list(p.groups),
            "labels": {"lab": "true"},
        }
        for p in plans
    ]
    (estate_dir / "hosts.yaml").write_text(yaml.safe_dump({"hosts": hosts}, sort_keys=False))
    service = {
        "name": "app",
        "description": "The lab's demo HTTP service (/health, /metrics) on every lab host.",
        "group": "lab",
        "health_check": {"kind": "http", "port": APP_PORT, "path": "/health"},
        "control": {
            "start": [SVC, "start"],
            "stop": [SVC, "stop"],
            "status": [SVC, "status"],
            "restart": [SVC, "restart"],
        },
        "log_dir": "/var/log/app",
        "owner_team": "ops",
        "impact": 2,
        "runbooks": {
            "service-down": "restart-service",
            "disk-full": "free-disk-space",
            "service-hung": "recover-hung-service",
        },
    }
    (estate_dir / "services.yaml").write_text(
        yaml.safe_dump({"services": [service]}, sort_keys=False)
    )
    write_people_and_rules(estate_dir, estate_dir.parent)
    write_catalog(estate_dir)
    write_entitlements(estate_dir)


@contextlib.contextmanager
def _mount_point_lock(timeout: float = 30.0) -> Iterator[None]:
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

        _poll("another lab to finish starting or stopping", locked, timeout, interval=0.02)
        yield
    finally:
        os.close(fd)


def _ensure_mount_points() -> list[str]:
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


def _spawn_sshd(plan: _Plan, log_size_mib: int) -> subprocess.Popen[bytes]:
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
                _namespace_script(plan, log_size_mib),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            env=_clean_env(),
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _died(plan: _Plan, proc: subprocess.Popen[bytes]) -> LabError:
    return LabError(
        f"{plan.name}: sshd exited with status {proc.returncode} while starting; "
        f"{plan.root / 'sshd.log'} ends with:\n{_tail(plan.root / 'sshd.log')}"
    )


def _await_namespaces(plans: list[_Plan], procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """Poll until each sshd process is inside its own new mount namespace; return inodes."""
    own = _mnt_ns("self")
    found: dict[int, int] = {}

    def check() -> bool:
        for i, (plan, proc) in enumerate(zip(plans, procs, strict=True)):
            if i in found:
                continue
            if proc.poll() is not None:
                raise _died(plan, proc)
            ns = _mnt_ns(proc.pid)
            if ns is not None and ns != own:
                found[i] = ns
        return len(found) == len(plans)

    _poll("the hosts' mount namespaces", check, timeout=10)
    return [found[i] for i in range(len(plans))]


def _await_ssh(plans: list[_Plan], procs: list[subprocess.Popen[bytes]]) -> None:
    pending = dict(enumerate(plans))

    def check() -> bool:
        for i, plan in list(pending.items()):
            if procs[i].poll() is not None:
                raise _died(plan, procs[i])
            if ssh_banner(plan.address, timeout=1.0):
                del pending[i]
        return not pending

    _poll("every host's ssh port to answer", check, timeout=10 + 0.2 * len(plans))


def _start_apps(plans: list[_Plan], pids: list[int]) -> None:
    def start(plan: _Plan, pid: int) -> str | None:
        result = _nsenter(plan.name, pid, [SVC, "start"], timeout=30)
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

    _poll("every host's app to answer /health", check, timeout=10 + 0.2 * len(plans))


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
    _require_programs()
    directory = _lab_dir(directory)
    _check_lab_dir(directory)
    addresses = _host_addresses(hosts, base_address)
    if not 1 <= log_size_mib <= 1024:
        raise LabError(f"log_size_mib must be 1 to 1024, not {log_size_mib}")
    if _read_state(directory) is not None:
        logger.info("a lab is already in %s: tearing it down first", directory)
        lab_down(directory)
    elif directory.exists() and any(directory.iterdir()):
        raise LabError(f"{directory} is not empty and holds no lab; refusing to use it")
    _check_ports_free(addresses)

    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    plans = [
        _Plan(
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
        "boot_id": _boot_id(),
        "base_address": base_address,
        "log_size_mib": log_size_mib,
        "created_dirs": [],
        "hosts": [],
    }
    _write_state(directory, state)
    procs: list[subprocess.Popen[bytes]] = []
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(_mount_point_lock())
        state["created_dirs"] = _ensure_mount_points()
        _write_state(directory, state)
        for plan in plans:
            (plan.root / "etc-upper" / "ssh").mkdir(parents=True)
        with ThreadPoolExecutor(max_workers=8) as pool:
            client_future = pool.submit(_keygen, directory / "client_key", "opsflow-lab-client")
            key_futures = {
                p.name: pool.submit(
                    _keygen, p.root / "etc-upper" / "ssh" / "ssh_host_ed25519_key", p.name
                )
                for p in plans
            }
            client_public = client_future.result()
            host_keys = {name: f.result() for name, f in key_futures.items()}
        app_server = resources.files("lab").joinpath("app_server.py").read_bytes()
        svc = resources.files("lab").joinpath("files/svc").read_bytes()
        hosts_file = Path("/etc/hosts").read_text()
        for plan in plans:
            _write_host_files(plan, client_public, app_server, svc, hosts_file)
        _write_estate(directory / "estate", plans, host_keys)

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
        _write_state(directory, state)
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


# --- tearing down ---------------------------------------------------------------------------


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
        ns = _mnt_ns(entry.name)
        if ns in wanted:
            found[ns].append(int(entry.name))
    return found


def _reap_children() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _stop_namespaces(targets: dict[int, Path]) -> None:
    """Kill every process in the given mount namespaces: TERM (and CONT), then KILL.

    The app is not a child of sshd, so killing sshd alone would leave it (and the namespace
    with its mounts) alive; every member of the namespace has to go. Each process is checked
    to be in *our* namespace right before it is signalled: once a namespace is freed, another
    lab starting meanwhile may get the same inode number.
    """
    protected = {_mnt_ns("self"), _mnt_ns(1)}
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
            _poll("the lab's processes to exit", lambda: not remaining(), wait)
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


def _mount_points_in_use(paths: Iterable[str]) -> set[str]:
    """Which of `paths` are mount points in any live mount namespace (other labs')."""
    wanted = set(paths)
    seen_ns: set[int] = set()
    in_use: set[str] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ns = _mnt_ns(entry.name)
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


def _remove_mount_points(created: Iterable[str]) -> None:
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


def lab_down(directory: Path | None = None) -> None:
    """Stop every process of the lab in `directory` and remove the directory entirely.

    Idempotent: no lab (or no directory) is not an error. Mounts vanish with the hosts'
    namespaces once their last process is gone. A non-empty directory without a lab state
    file is refused rather than deleted.
    """
    require_root()
    directory = _lab_dir(directory)
    if not directory.exists():
        return
    state = _read_state(directory)
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
    if _same_boot(state):
        targets = {
            record["mnt_ns"]: directory / "hosts" / record["name"]
            for record in state.get("hosts", [])
            if record.get("mnt_ns")
        }
        _stop_accounts(record["address"] for record in state.get("hosts", []))
        _stop_namespaces(targets)
        for record in state.get("hosts", []):
            child = _CHILDREN.pop(record.get("sshd_pid"), None)
            if child is not None:
                try:
                    child.wait(timeout=5)  # our own child: reap it rather than leave a zombie
                except subprocess.TimeoutExpired as exc:
                    raise LabError(f"sshd {child.pid} of {record['name']} did not exit") from exc
    shutil.rmtree(directory)
    with _mount_point_lock():
        _remove_mount_points(state.get("created_dirs", []))
    logger.info("lab in %s down after %.2fs", directory, time.monotonic() - started)


# --- inspecting and breaking -----------------------------------------------------------------


def lab_status(directory: Path | None = None) -> list[dict[str, Any]]:
    """Per host: name, address, whether sshd runs, the ssh port answers, the app is healthy."""
    lab = lab_state(directory)

    def check(host: LabHost) -> dict[str, Any]:
        banner = ssh_banner(host.address, host.ssh_port, timeout=1.0)
        health = app_health(host.address, host.app_port, timeout=1.0)
        return {
            "name": host.name,
            "address": host.address,
            "ssh_port": host.ssh_port,
            "app_port": host.app_port,
            "sshd_pid": host.sshd_pid,
            "sshd_running": host.sshd_pid is not None,
            "ssh_answers": banner is not None,
            "app_healthy": bool(health and health.get("host") == host.name),
            "app_pid": health.get("pid") if health else None,
        }

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(lab.hosts)))) as pool:
        return list(pool.map(check, lab.hosts))


BreakKind = Literal["service", "disk", "hang"]


def _app_pid(sshd_pid: int, mnt_ns: int) -> int | None:
    """The PID of the host's running app from its pidfile, checked to be in its namespace."""
    try:
        text = Path(f"/proc/{sshd_pid}/root/var/lib/app/app.pid").read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not _alive_in(int(text), mnt_ns):
        return None
    return int(text)


def _fill_log_disk(host: str, sshd_pid: int, target_percent: float = 98.0) -> str:
    """Fill the host's /var/log/app with old rotated logs until it is `target_percent` used."""
    # /proc/PID/root walks the path in the host's own mount namespace: its private tmpfs.
    log_dir = Path(f"/proc/{sshd_pid}/root/var/log/app")
    fs = os.statvfs(log_dir)
    used = 100 * (fs.f_blocks - fs.f_bfree) / fs.f_blocks
    if used >= 95:
        return f"{host}: /var/log/app is already {used:.0f}% full; nothing written"
    total = fs.f_blocks * fs.f_frsize
    to_write = fs.f_bavail * fs.f_frsize - int(total * (100 - target_percent) / 100)
    line = f"{host} app: GET /health 200 0.4ms worker=3 request_id=%08x\n"
    block = "".join(line % n for n in range(2048)).encode()
    files = 5
    now = time.time()
    written = 0
    for n in range(1, files + 1):
        path = log_dir / f"app.log.{n}"
        share = max(to_write - written, 0) // (files - n + 1)
        try:
            with open(path, "ab") as out:
                left = share
                while left > 0:
                    chunk = block[:left]
                    out.write(chunk)
                    left -= len(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise LabError(f"{host}: cannot fill /var/log/app: {exc.strerror}") from exc
        written += share
        old = now - (10 + n) * 86400  # rotated logs look 11-15 days old
        os.utime(path, (old, old))
    fs = os.statvfs(log_dir)
    used = 100 * (fs.f_blocks - fs.f_bfree) / fs.f_blocks
    if used < 95:
        raise LabError(f"{host}: filled /var/log/app only to {used:.0f}%")
    return (
        f"{host}: filled /var/log/app to {used:.0f}% with {files} old rotated logs "
        f"(app.log.1-{files}, {written / 2**20:.1f} MiB, mtime 11-15 days ago)"
    )


def break_host(host: str, kind: BreakKind, directory: Path | None = None) -> str:
    """Break a lab host for real and say what was done.

    Args:
        host: Lab host name, e.g. lab02.
        kind: `service` stops the app (svc stop); `disk` fills /var/log/app to at least 95%
            with old rotated logs; `hang` freezes the app with SIGSTOP, so its process lives
            but /health times out.
        directory: The lab's directory; default `get_settings().lab_dir`.
    """
    directory = _lab_dir(directory)
    record = _record(directory, host)
    sshd_pid, mnt_ns = record["sshd_pid"], record["mnt_ns"]
    if kind == "service":
        result = _nsenter(host, sshd_pid, [SVC, "stop"], timeout=30)
        if result.returncode != 0:
            raise LabError(f"{host}: svc stop failed: {result.stderr.strip()}")
        return f"{host}: stopped the app service ({result.stdout.strip()})"
    if kind == "disk":
        return _fill_log_disk(host, sshd_pid)
    if kind == "hang":
        pid = _app_pid(sshd_pid, mnt_ns)
        if pid is None:
            raise LabError(f"{host}: the app is not running, so there is nothing to hang")
        if _proc_state(pid) == "T":
            return f"{host}: the app (pid {pid}) is already frozen; nothing done"
        os.kill(pid, signal.SIGSTOP)
        # The signal is delivered when the process is next scheduled: wait until it is.
        _poll(f"{host}'s app to stop", lambda: _proc_state(pid) == "T", 5.0)
        return f"{host}: froze the app with SIGSTOP (pid {pid}); /health will time out"
    raise LabError(f"unknown kind of breakage {kind!r} (service, disk or hang)")
