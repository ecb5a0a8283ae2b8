"""Log rotation keeps the configured count, and writes nothing through a link planted in a log
directory others can write: on lab05, through the rotate-logs flow and rotate_log itself."""

from __future__ import annotations

import pytest
from prefect import flow

from opsflow.flows.routine_ops.rotate_logs import rotate_logs
from opsflow.inventory.models import Service
from opsflow.tasks.inventory import read_estate
from opsflow.tasks.log_rotation import LogRotation, rotate_log
from opsflow.tasks.logs import UnsafeLogPathError, read_log_tail
from tests.support.log_dirs import AS_NOBODY, HOST, TRAP_DIR, VICTIM, listing, sh, victim_state

pytestmark = pytest.mark.usefixtures("ssh_credentials")


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


@flow
def rotate_trap(service: Service, keep: int = 3) -> LogRotation:
    """rotate_log on lab05 inside a flow run, as rotate-logs runs it."""
    return rotate_log(read_estate().host(HOST), service, keep=keep)


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


def test_a_log_directory_others_can_write_is_refused(estate, trap) -> None:
    sh('chmod 0777 "$1"; echo line > "$1/trap.log"', TRAP_DIR)

    with pytest.raises(UnsafeLogPathError, match="writable by others than its owner"):
        rotate_trap(trap)
    assert read_log_tail(estate.host(HOST), trap).startswith("not read: ")
