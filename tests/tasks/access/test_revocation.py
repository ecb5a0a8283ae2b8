"""Revoking access on real lab hosts leaves nothing of the user running or scheduled."""

from __future__ import annotations

from typing import Any

import pytest

from opsflow.lab.hosts.plan import account_ids
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.access.accounts import ensure_account, remove_account
from opsflow.tasks.access.keys import install_key, remove_key
from tests.support.access_lab import Person, ssh_as
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("access_env")

USER = "erin"
GRANT = 9101
HOSTS = ("lab03", "lab04")

# Started over SSH by the user; setsid and full redirection let the session end at once.
DETACHED = "setsid {} >/dev/null 2>&1 </dev/null &"
WORK = "\n".join(
    [
        "set -e",
        DETACHED.format("unshare -Urm sleep 3600"),
        DETACHED.format("sleep 3601"),
        "echo '* * * * * sleep 3602' | crontab -",
        "echo 'sleep 3603' | at now + 1 hour 2>/dev/null",
    ]
)


def on(lab: Any, host: str, script: str, *args: str) -> str:
    result = run_on_host(host, ["sh", "-c", script, "sh", *args], lab.directory)
    assert result.returncode == 0, result.stderr
    return result.stdout


def processes(lab: Any, host: str, uid: str) -> dict[str, str]:
    """The user's live processes (pid to command line), zombies left out."""
    out = on(
        lab,
        host,
        "ps -A -o pid=,stat=,uid=,args= | awk -v u=\"$1\" '$3 == u && $2 !~ /^Z/'",
        uid,
    )
    return {line.split()[0]: " ".join(line.split()[3:]) for line in out.splitlines()}


def scheduled(lab: Any, host: str) -> str:
    """The user's crontab and the host's at queue."""
    return on(lab, host, 'crontab -l -u "$1" 2>/dev/null; atq', USER)


@pytest.fixture
def granted(access_lab: Any, access_estate: Any, access_people: dict[str, Person]) -> Any:
    """erin granted on lab03 and lab04, each with work running and scheduled; gone after."""
    uids = {}
    for name in HOSTS:
        host = access_estate.host(name)
        ensure_account.fn(host, USER)
        install_key.fn(host, USER, access_people["carol"].public_key, GRANT)
        assert ssh_as(host, USER, access_people["carol"].key_file, WORK) == 0
        uids[name] = on(access_lab, name, 'id -u "$1"', USER).strip()
        wait_for(
            lambda n=name: (
                sorted(processes(access_lab, n, uids[n]).values()) == ["sleep 3600", "sleep 3601"]
            ),
            10,
            f"erin's two sleeps on {name}",
        )
    yield uids
    for name in HOSTS:
        run_on_host(name, ["pkill", "-KILL", "-u", uids[name]], access_lab.directory)
        run_on_host(name, ["crontab", "-r", "-u", USER], access_lab.directory)
        on(access_lab, name, "atq | awk '{ print $1 }' | xargs -r atrm")
        run_on_host(name, ["userdel", "--force", "--remove", USER], access_lab.directory)


def test_revocation_ends_every_process_and_job_of_the_user(
    access_lab: Any, access_estate: Any, granted: dict[str, str]
) -> None:
    host = access_estate.host("lab03")
    uid = granted["lab03"]
    running = processes(access_lab, "lab03", uid)
    unshared = next(pid for pid, args in running.items() if "3600" in args)
    own_ns = on(access_lab, "lab03", "readlink /proc/self/ns/mnt")
    assert on(access_lab, "lab03", 'readlink "/proc/$1/ns/mnt"', unshared) != own_ns
    assert "sleep 3602" in scheduled(access_lab, "lab03")
    assert USER in scheduled(access_lab, "lab03")

    assert remove_key.fn(host, USER, GRANT).changed
    removal = remove_account.fn(host, USER)

    assert removal.changed, removal.detail
    assert processes(access_lab, "lab03", uid) == {}, "the user's processes outlived revocation"
    assert scheduled(access_lab, "lab03") == "", "the user's crontab or at job is left"
    assert run_on_host("lab03", ["getent", "passwd", USER], access_lab.directory).returncode == 2
    assert not remove_account.fn(host, USER).changed


def test_revocation_on_one_host_leaves_a_namesake_on_another_alone(
    access_lab: Any, access_estate: Any, granted: dict[str, str]
) -> None:
    for name, uid in granted.items():
        assert int(uid) in account_ids(access_estate.host(name).address)
    assert granted["lab03"] != granted["lab04"]
    lab04_before = processes(access_lab, "lab04", granted["lab04"])
    lab04_jobs = scheduled(access_lab, "lab04")

    remove_key.fn(access_estate.host("lab03"), USER, GRANT)
    assert remove_account.fn(access_estate.host("lab03"), USER).changed

    assert processes(access_lab, "lab04", granted["lab04"]) == lab04_before
    assert scheduled(access_lab, "lab04") == lab04_jobs
