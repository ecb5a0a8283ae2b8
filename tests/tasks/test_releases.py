"""Release steps on a real lab host: put in place, restart, health gate, roll back."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from prefect import flow

from opsflow.errors import CommandFailedError
from opsflow.inventory.models import Host, Service
from opsflow.lab.hosts.probes import app_health, app_version
from opsflow.lab.hosts.releases import INITIAL_RELEASE
from opsflow.lab.hosts.run import SVC, run_on_host
from opsflow.tasks.health_gate import GateResult, HealthGateError, wait_for_health_gate
from opsflow.tasks.releases import (
    InvalidVersionError,
    ReleaseChange,
    ReleaseMissingError,
    ReleaseMovedError,
    UnsafeReleasePathError,
    parse_release_state,
    put_release,
    read_release,
    restart_release,
    roll_back_release,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("ssh_credentials")

HOST = "lab04"
CURRENT = "/var/lib/app/current"


def ground(lab, *argv: str) -> str:
    """Run a command on the host bypassing SSH (ground truth); its stdout, failing on non-zero."""
    result = run_on_host(HOST, list(argv), lab.directory)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture
def host(lab, estate) -> Iterator[Host]:
    """The lab host the test acts on, given back running the initial release and healthy."""
    yield estate.host(HOST)
    address = lab.host(HOST).address
    if ground(lab, "readlink", CURRENT) != f"releases/{INITIAL_RELEASE}":
        ground(lab, "ln", "-sfn", f"releases/{INITIAL_RELEASE}", CURRENT)
    if (app_health(address, timeout=2) or {}).get("version") != INITIAL_RELEASE:
        ground(lab, SVC, "restart")
    assert (app_health(address, timeout=2) or {}).get("version") == INITIAL_RELEASE


@pytest.fixture
def app(estate) -> Service:
    return estate.service("app")


def test_a_good_release_goes_in_and_back_out(lab, host: Host, app: Service) -> None:
    address = lab.host(HOST).address

    @flow
    def release(version: str) -> tuple[ReleaseChange, ReleaseChange, GateResult]:
        put = put_release(host, app, version)
        restarted = restart_release(host, app)
        return put, restarted, wait_for_health_gate(host, app, deadline_s=20, passes=3)

    put, restarted, gate = release("1.1.0")
    assert (put.state, put.version, put.previous) == ("made", "1.1.0", INITIAL_RELEASE)
    assert ground(lab, "readlink", CURRENT) == "releases/1.1.0"
    assert (restarted.state, restarted.version) == ("made", "1.1.0")
    assert gate.passes == 3
    assert app_version(address, timeout=2) == "1.1.0"
    assert (app_health(address, timeout=2) or {}).get("version") == "1.1.0"

    again = put_release.fn(host, app, "1.1.0")
    assert (again.state, again.changed) == ("unchanged", False)
    assert read_release.fn(host, app).current == "1.1.0"

    back = roll_back_release.fn(host, app, "1.1.0", INITIAL_RELEASE)
    assert (back.state, back.version, back.previous) == ("made", INITIAL_RELEASE, "1.1.0")
    restart_release.fn(host, app)
    wait_for_health_gate.fn(host, app, deadline_s=20, passes=2)
    assert app_version(address, timeout=2) == INITIAL_RELEASE


def test_putting_the_running_release_again_changes_nothing(lab, host: Host, app: Service) -> None:
    inode = ground(lab, "stat", "-c", "%i %Y", CURRENT)
    pid = (app_health(lab.host(HOST).address, timeout=2) or {})["pid"]
    for _ in range(2):
        change = put_release.fn(host, app, INITIAL_RELEASE)
        assert (change.state, change.version) == ("unchanged", INITIAL_RELEASE)
        assert "already names" in change.detail
    assert ground(lab, "stat", "-c", "%i %Y", CURRENT) == inode
    assert (app_health(lab.host(HOST).address, timeout=2) or {})["pid"] == pid


def test_a_release_failing_its_health_check_is_stopped_by_the_gate_and_rolled_back(
    lab, host: Host, app: Service
) -> None:
    address = lab.host(HOST).address
    put = put_release.fn(host, app, "1.2.0-badhealth")
    restart_release.fn(host, app)
    assert app_version(address, timeout=2) == "1.2.0-badhealth"
    with pytest.raises(HealthGateError, match="did not pass its health check 2 times") as failed:
        wait_for_health_gate.fn(host, app, deadline_s=3, passes=2, interval_s=0.2)
    assert "status 503" in str(failed.value)
    # It kept checking, and started none after its deadline: checks 0.2 s apart or more,
    # so 16 at the most fit in 3 s.
    checks = re.search(r"\((\d+) checks, the last", str(failed.value))
    assert checks is not None and 2 <= int(checks[1]) <= 16, str(failed.value)

    back = roll_back_release.fn(host, app, put.version, put.previous)
    assert back.state == "made"
    restart_release.fn(host, app)
    assert wait_for_health_gate.fn(host, app, deadline_s=20, passes=3).passes == 3
    assert app_version(address, timeout=2) == INITIAL_RELEASE
    twice = roll_back_release.fn(host, app, put.version, put.previous)
    assert twice.state == "unchanged"


def test_a_release_that_does_not_start_fails_the_gate_and_is_rolled_back(
    lab, host: Host, app: Service
) -> None:
    address = lab.host(HOST).address
    put = put_release.fn(host, app, "1.3.0-nostart")
    with pytest.raises(CommandFailedError, match=r"1\.3\.0-nostart: release defect"):
        restart_release.fn(host, app)
    with pytest.raises(HealthGateError, match="connection refused"):
        wait_for_health_gate.fn(host, app, deadline_s=2, passes=1, interval_s=0.2)
    assert app_version(address, timeout=1) is None

    roll_back_release.fn(host, app, put.version, put.previous)
    restart_release.fn(host, app)
    wait_for_health_gate.fn(host, app, deadline_s=20, passes=3)
    assert (app_health(address, timeout=2) or {}).get("version") == INITIAL_RELEASE


def test_a_dry_run_plans_and_changes_nothing(lab, host: Host, app: Service) -> None:
    planned = put_release.fn(host, app, "1.1.0", dry_run=True)
    assert (planned.state, planned.previous) == ("planned", INITIAL_RELEASE)
    assert ground(lab, "readlink", CURRENT) == f"releases/{INITIAL_RELEASE}"


@pytest.mark.parametrize(
    ("version", "field"),
    [
        ("1.0; rm -rf /", "version"),
        ("../../etc", "version"),
        ("1.0/../../x", "version"),
        ("-rf", "version"),
        ("", "version"),
        ("1.0\n2.0", "version"),
        ("x" * 65, "version"),
    ],
)
def test_hostile_versions_are_refused_before_any_ssh(
    estate, app: Service, version: str, field: str
) -> None:
    nowhere = estate.host(HOST).model_copy(update={"address": "127.0.51.254", "port": 9})
    with pytest.raises(InvalidVersionError, match=rf"^{field} .* is not a release version"):
        put_release.fn(nowhere, app, version)
    with pytest.raises(InvalidVersionError, match=r"^from_version "):
        roll_back_release.fn(nowhere, app, version, INITIAL_RELEASE)
    with pytest.raises(InvalidVersionError, match=r"^to_version "):
        roll_back_release.fn(nowhere, app, "1.1.0", version)


def test_a_release_the_host_does_not_keep_is_refused(lab, host: Host, app: Service) -> None:
    with pytest.raises(ReleaseMissingError, match=r"no release 9\.9\.9 .*keeps: 1\.0\.0, 1\.1\.0"):
        put_release.fn(host, app, "9.9.9")
    assert ground(lab, "readlink", CURRENT) == f"releases/{INITIAL_RELEASE}"


def test_a_rollback_after_someone_else_moved_current_is_refused(
    lab, host: Host, app: Service
) -> None:
    ground(lab, "ln", "-sfn", "releases/1.1.0", CURRENT)
    with pytest.raises(ReleaseMovedError, match=r"names '?1\.1\.0'?, neither 1\.2\.0-badhealth"):
        roll_back_release.fn(host, app, "1.2.0-badhealth", INITIAL_RELEASE)
    assert ground(lab, "readlink", CURRENT) == "releases/1.1.0"


def hold_release_lock(lab, seconds: int) -> None:
    """Hold the app's release lock on the host for `seconds`, as another release step would;
    back once it is held."""
    ground(lab, "sh", "-c", f"flock /var/lib/app sleep {seconds} >/dev/null 2>&1 &")
    try_lock = ["flock", "-n", "/var/lib/app", "true"]
    wait_for(lambda: run_on_host(HOST, try_lock, lab.directory).returncode, 10, "the lock held")


def test_a_release_step_waits_for_another_and_then_gives_up(lab, host: Host, app: Service) -> None:
    hold_release_lock(lab, 3)
    waited = put_release.fn(host, app, "1.1.0")
    assert (waited.state, waited.version) == ("made", "1.1.0"), "it waited, then went on"
    ground(lab, "ln", "-sfn", f"releases/{INITIAL_RELEASE}", CURRENT)

    hold_release_lock(lab, 12)
    with pytest.raises(ReleaseMovedError, match="another release step held its lock for 10s"):
        put_release.fn(host, app, "1.1.0")
    assert ground(lab, "readlink", CURRENT) == f"releases/{INITIAL_RELEASE}"


SAVED = "/var/lib/app/saved-by-test"


@pytest.mark.parametrize(
    ("plant", "undo", "reason"),
    [
        (
            "chmod 0777 /var/lib/app/releases",
            "chmod 0755 /var/lib/app/releases",
            "releases is writable by others than its owner",
        ),
        (
            "chmod 0777 /var/lib/app",
            "chmod 0755 /var/lib/app",
            "/var/lib/app is writable by others than its owner",
        ),
        (
            f"mv /var/lib/app/releases/1.1.0 {SAVED} && ln -s /etc /var/lib/app/releases/1.1.0",
            f"rm /var/lib/app/releases/1.1.0 && mv {SAVED} /var/lib/app/releases/1.1.0",
            "releases/1.1.0 is a symbolic link",
        ),
        (
            f"mv {CURRENT} {SAVED} && mkdir {CURRENT}",
            f"rmdir {CURRENT} && mv {SAVED} {CURRENT}",
            "current is not a symbolic link",
        ),
    ],
)
def test_unsafe_release_directories_are_refused(
    lab, host: Host, app: Service, plant: str, undo: str, reason: str
) -> None:
    before = ground(lab, "stat", "-c", "%i", CURRENT)
    ground(lab, "sh", "-c", plant)
    try:
        with pytest.raises(UnsafeReleasePathError, match=reason):
            put_release.fn(host, app, "1.1.0")
    finally:
        ground(lab, "sh", "-c", undo)
    assert ground(lab, "stat", "-c", "%i", CURRENT) == before
    assert ground(lab, "readlink", CURRENT) == f"releases/{INITIAL_RELEASE}"


def test_release_listing_is_read_as_nul_framed_fields(app: Service) -> None:
    output = "releases/1.0.0\0d1.0.0\0dx\nd9.9.9\0d1.1.0\0l2.0.0\0f3.0.0\0d..\0"
    state = parse_release_state("lab04", app, output)
    assert (state.current, state.releases, state.links) == ("1.0.0", ["1.0.0", "1.1.0"], ["2.0.0"])
    foreign = parse_release_state("lab04", app, "/usr/lib\0")
    assert (foreign.current, foreign.link, foreign.releases) == (None, "/usr/lib", [])
