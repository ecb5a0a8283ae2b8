"""Log clean-up and rotation do only what the policy names, and nothing through planted links
(tasks.log_cleanup, tasks.log_rotation and the safe-directory core they share, tasks.logs)."""

from __future__ import annotations

import pytest
from prefect import flow

from opsflow.flows.routine_ops.clean_disk import clean_disk
from opsflow.flows.routine_ops.rotate_logs import rotate_logs
from opsflow.inventory.models import Service
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.log_cleanup import CleanupPolicy, Filesystem, LogFile, plan_cleanup
from opsflow.tasks.log_rotation import LogRotation, rotate_log
from opsflow.tasks.logs import UnsafeLogPathError, read_log_tail

pytestmark = pytest.mark.usefixtures("ssh_credentials")

HOST = "lab05"
LOG_DIR = "/var/log/app"
NOW = 1_800_000_000.0
DAY = 86400.0


def sh(script: str, *args: str) -> str:
    result = run_on_host(HOST, ["sh", "-c", script, "sh", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


def listing() -> set[str]:
    return set(sh('cd "$1" && find . -type f | sed "s|^./||"', LOG_DIR).split())


@pytest.fixture
def log_dir():
    """Lab05's log directory holding only the live log, before and after the test."""
    clear = 'cd "$1" && find . -mindepth 1 ! -name app.log -exec rm -rf {} +'
    sh(clear, LOG_DIR)
    yield LOG_DIR
    sh(clear, LOG_DIR)


def policy(**rules) -> CleanupPolicy:
    return CleanupPolicy(directory=LOG_DIR, pattern="*.log.*", live_log="app.log", **rules)


def file(name: str, age_days: float, mib: float = 1.0) -> LogFile:
    size = int(mib * 2**20)
    return LogFile(
        name=name, inode=hash(name) & 0xFFFF, mtime=NOW - age_days * DAY, size=size, kb=size // 1024
    )


@pytest.mark.parametrize(
    ("rules", "files", "used_kb", "expected"),
    [
        ({"older_than_days": 7}, [file("a.log.1", 8), file("a.log.2", 6)], 0, ["a.log.1"]),
        ({"older_than_days": 7}, [file("a.log.1", 1)], 0, []),
        (
            {"max_total_mb": 2.5},
            [file("a.log.1", 1), file("a.log.2", 2), file("a.log.3", 3)],
            0,
            ["a.log.3"],
        ),
        (
            {"max_used_percent": 70},
            [file("a.log.1", 1, 2), file("a.log.2", 2, 2), file("a.log.3", 3, 2)],
            9 * 1024,
            ["a.log.3", "a.log.2"],
        ),
        (
            {"older_than_days": 7, "max_used_percent": 80},
            [file("a.log.1", 9, 2)],
            9 * 1024,
            ["a.log.1"],
        ),
    ],
    ids=["too-old", "young-kept", "over-total-size", "fs-too-full-oldest-first", "age-counts-free"],
)
def test_cleanup_plan(rules, files, used_kb, expected) -> None:
    fs = Filesystem(size_kb=10 * 1024, used_kb=used_kb)
    assert [d.file.name for d in plan_cleanup(files, fs, policy(**rules), NOW)] == expected


def test_clean_up_removes_only_what_the_policy_names(log_dir: str) -> None:
    sh(
        """cd "$1"
        for f in app.log.7 app.log.8.gz notes.txt sub/app.log.9 app.log.2; do
            mkdir -p "$(dirname "$f")"; head -c 4096 /dev/urandom > "$f"
        done
        touch -d '20 days ago' app.log.7 app.log.8.gz notes.txt sub/app.log.9 app.log
        touch -d '2 days ago' app.log.2""",
        log_dir,
    )
    before = listing()
    assert before == {
        "app.log",
        "app.log.7",
        "app.log.8.gz",
        "notes.txt",
        "sub/app.log.9",
        "app.log.2",
    }

    [dry] = clean_disk(hosts=[HOST], dry_run=True)
    assert dry.state == "planned" and not dry.changed
    assert sorted(n.split()[0] for n in dry.deleted) == ["app.log.7", "app.log.8.gz"]
    assert listing() == before, "a dry run deleted something"

    [done] = clean_disk(hosts=[HOST])
    assert done.state == "made" and done.changed
    assert sorted(n.split()[0] for n in done.deleted) == ["app.log.7", "app.log.8.gz"]
    assert listing() == before - {"app.log.7", "app.log.8.gz"}

    [again] = clean_disk(hosts=[HOST])
    assert not again.changed and again.deleted == []
    assert again.detail.startswith("unchanged")


def test_rotation_keeps_the_configured_count(log_dir: str) -> None:
    sh(
        """cd "$1"
        for n in 1 2 3 4; do echo "rotated $n" | gzip > "app.log.$n.gz"; done
        echo "live line one" >> app.log""",
        log_dir,
    )
    live_before = sh('cat "$1/app.log"', log_dir)

    [dry] = rotate_logs(hosts=[HOST], keep=3, dry_run=True)
    assert dry.state == "planned" and not dry.changed
    assert sorted(dry.deleted) == [f"{log_dir}/app.log.3.gz", f"{log_dir}/app.log.4.gz"]
    assert sh('cat "$1/app.log"', log_dir) == live_before, "a dry run touched the live log"

    [done] = rotate_logs(hosts=[HOST], keep=3)
    assert done.changed and done.rotated_bytes == len(live_before.encode())
    rotated = sorted(n for n in listing() if n.startswith("app.log."))
    assert rotated == ["app.log.1.gz", "app.log.2.gz", "app.log.3.gz"]
    assert sh('zcat "$1/app.log.1.gz"', log_dir) == live_before
    assert sh('zcat "$1/app.log.2.gz"', log_dir) == "rotated 1\n"
    assert sh('zcat "$1/app.log.3.gz"', log_dir) == "rotated 2\n"
    assert sh('stat -c %s "$1/app.log"', log_dir).strip() == "0"

    [again] = rotate_logs(hosts=[HOST], keep=3)
    assert again.state == "unchanged" and not again.changed
    assert sorted(n for n in listing() if n.startswith("app.log.")) == rotated

    sh('echo "live line two" >> "$1/app.log"', log_dir)
    [next_day] = rotate_logs(hosts=[HOST], keep=3)
    assert next_day.changed
    assert sorted(n for n in listing() if n.startswith("app.log.")) == rotated
    assert sh('zcat "$1/app.log.2.gz"', log_dir) == live_before


# --- links and owners in log directories others can write ------------------------------------

TRAP_DIR = f"{LOG_DIR}/trap"
VICTIM = "/etc/opsflow-victim"
VICTIM_TEXT = "root's secret\n"
AS_NOBODY = "setpriv --reuid=nobody --regid=nogroup --clear-groups --"


@pytest.fixture
def trap(estate):
    """A service whose log directory belongs to `nobody`, and a root-only file to aim at."""
    sh(
        """rm -rf "$1"; mkdir "$1"; chown nobody:nogroup "$1"
        printf %s "$3" > "$2"; chmod 0600 "$2" """,
        TRAP_DIR,
        VICTIM,
        VICTIM_TEXT,
    )
    yield estate.service("app").model_copy(update={"name": "trap", "log_dir": TRAP_DIR})
    sh('rm -rf "$1" "$2"', TRAP_DIR, VICTIM)


@flow
def rotate_trap(service: Service, keep: int = 3) -> LogRotation:
    """rotate_log on lab05 inside a flow run, as rotate-logs runs it."""
    return rotate_log(read_estate().host(HOST), service, keep=keep)


def victim_state() -> str:
    return sh('stat -c "%U %a %s" "$1"; cat "$1"', VICTIM)


@pytest.mark.parametrize(
    ("link", "refused"),
    [
        ("trap.log", "trap.log is a symbolic link"),
        ("trap.log.1.gz.opsflow-tmp", "trap.log.1.gz.opsflow-tmp is a symbolic link"),
        ("trap.log.1.gz", "trap.log.1.gz is a symbolic link"),
    ],
    ids=["live-log", "old-temporary-name", "rotated-file"],
)
def test_rotation_refuses_a_link_planted_in_the_log_directory(
    estate, trap, link: str, refused: str
) -> None:
    before = victim_state()
    sh(
        f'cd "$1" && {AS_NOBODY} sh -c \'echo line >> trap.log; ln -sf "$1" "$2"\' sh "$2" "$3"',
        TRAP_DIR,
        VICTIM,
        link,
    )

    with pytest.raises(UnsafeLogPathError, match=refused):
        rotate_trap(trap)

    assert victim_state() == before, "root wrote through the planted link"
    assert not sh('find "$1" -name "*.gz" -type f', TRAP_DIR), "an archive was made anyway"


@pytest.mark.parametrize("directory_owner", ["root", "nobody"])
def test_an_archive_keeps_the_owner_and_mode_of_its_log(estate, trap, directory_owner: str) -> None:
    sh(
        """chown "$2" "$1"; cd "$1"
        printf 'private line\\n' > trap.log; chown nobody:nogroup trap.log; chmod 0600 trap.log""",
        TRAP_DIR,
        directory_owner,
    )

    result = rotate_trap(trap)

    assert result.changed
    assert sh('stat -c "%U:%G %a" "$1/trap.log.1.gz"', TRAP_DIR).split() == [
        "nobody:nogroup",
        "600",
    ]
    assert sh('zcat "$1/trap.log.1.gz"', TRAP_DIR) == "private line\n"
    assert sh('stat -c "%U %a %s" "$1/trap.log"', TRAP_DIR).split() == ["nobody", "600", "0"]


def test_log_tail_does_not_read_through_a_planted_link(estate, trap) -> None:
    sh(f'{AS_NOBODY} ln -s "$2" "$1/trap.log"', TRAP_DIR, VICTIM)

    tail = read_log_tail(estate.host(HOST), trap)

    assert "secret" not in tail
    assert tail == f"not read: {TRAP_DIR}/trap.log is a symbolic link"
    sh(f'{AS_NOBODY} sh -c \'rm "$1" && echo "own line" > "$1"\' sh "$1/trap.log"', TRAP_DIR)
    assert read_log_tail(estate.host(HOST), trap) == "own line\n"


def test_a_log_directory_others_can_write_is_refused(estate, trap) -> None:
    sh('chmod 0777 "$1"; echo line > "$1/trap.log"', TRAP_DIR)

    with pytest.raises(UnsafeLogPathError, match="writable by others than its owner"):
        rotate_trap(trap)
    assert read_log_tail(estate.host(HOST), trap).startswith("not read: ")
