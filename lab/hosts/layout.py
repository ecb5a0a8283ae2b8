"""A lab host's own files and mounts: its /etc overlay (sshd config, keys, login.defs), private
directories (the app's releases among them) and cron spool, and the script that mounts them in
its namespaces.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from opsflow.lab.hosts.plan import APP_PORT, SSH_PORT, Plan, account_ids
from opsflow.lab.hosts.releases import write_releases

CRON_SPOOL = Path("/var/spool/cron")
"""Users' crontabs and at jobs: private per host when the machine has cron or at installed."""


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


def _sshd_config(plan: Plan) -> str:
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


def namespace_script(plan: Plan, log_size_mib: int) -> str:
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


ADMIN_TOKEN_PATH = "/etc/app-admin/token"  # noqa: S105 - where the token is, not a token
"""Where each host keeps its app's admin API token (root only)."""


def write_host_files(
    plan: Plan,
    client_public: str,
    app_server: bytes,
    svc: bytes,
    hosts_file: str,
    admin_token: str,
) -> None:
    """Lay out a host's directory: overlay upper dir with its /etc files, private dirs, the
    app's control script and releases."""
    root = plan.root
    for sub in ("etc-upper/ssh", "etc-upper/app", "etc-work", "home", "root", "var-lib-app/bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    etc = root / "etc-upper"
    (etc / "ssh" / "sshd_config").write_text(_sshd_config(plan))
    (etc / "ssh" / "lab_authorized_keys").write_text(client_public + "\n")
    (etc / "app" / "app.conf").write_text(
        f"ADDRESS={plan.address}\nPORT={APP_PORT}\nNAME={plan.name}\n"
        f"ADMIN_TOKEN_FILE={ADMIN_TOKEN_PATH}\n"
    )
    # Beside the config, not in it: a diagnostic bundle collects /etc/app for requesters.
    token = etc / ADMIN_TOKEN_PATH.removeprefix("/etc/")
    token.parent.mkdir(mode=0o700, exist_ok=True)
    token.touch(mode=0o600)
    token.write_text(admin_token + "\n")
    (etc / "hostname").write_text(plan.name + "\n")
    (etc / "login.defs").write_text(
        _login_defs(Path("/etc/login.defs").read_text(), account_ids(plan.address))
    )
    if CRON_SPOOL.is_dir():
        _private_cron_spool(root)
    (etc / "hosts").write_text(hosts_file + f"{plan.address}\t{plan.name}\n")
    bin_dir = root / "var-lib-app" / "bin"
    (bin_dir / "svc").write_bytes(svc)
    (bin_dir / "svc").chmod(0o755)
    write_releases(root / "var-lib-app", app_server)
