"""Disk clean-up removes only what the policy names; rotation keeps the configured count."""

from __future__ import annotations

import pytest

from flows.routine_ops import clean_disk, rotate_logs
from lab.hosts import run_on_host
from tasks.logs import CleanupPolicy, Filesystem, LogFile, plan_cleanup

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
    assert not dry.changed and dry.dry_run
    assert sorted(n.split()[0] for n in dry.deleted) == ["app.log.7", "app.log.8.gz"]
    assert listing() == before, "a dry run deleted something"

    [done] = clean_disk(hosts=[HOST])
    assert done.changed
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
    assert dry.action == "rotated" and not dry.changed
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
    assert not again.changed and again.action == "skipped"
    assert sorted(n for n in listing() if n.startswith("app.log.")) == rotated

    sh('echo "live line two" >> "$1/app.log"', log_dir)
    [next_day] = rotate_logs(hosts=[HOST], keep=3)
    assert next_day.changed
    assert sorted(n for n in listing() if n.startswith("app.log.")) == rotated
    assert sh('zcat "$1/app.log.2.gz"', log_dir) == live_before
