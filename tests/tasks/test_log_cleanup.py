"""Log clean-up deletes only what the policy names: the plan as a pure function, then on lab05
through the clean-disk flow, dry run first and twice."""

from __future__ import annotations

import pytest

from opsflow.flows.routine_ops.clean_disk import clean_disk
from opsflow.tasks.log_cleanup import CleanupPolicy, Filesystem, LogFile, plan_cleanup
from tests.support.log_dirs import HOST, LOG_DIR, listing, sh

pytestmark = pytest.mark.usefixtures("ssh_credentials")

NOW = 1_800_000_000.0
DAY = 86400.0


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
