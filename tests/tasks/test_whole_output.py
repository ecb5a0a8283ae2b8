"""Output parsed as data arrives whole, far beyond any tail, or fails loudly at its bound."""

from __future__ import annotations

import pytest

from opsflow.errors import OutputTooLargeError
from opsflow.flows.routine_ops.clean_disk import clean_disk
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.facts import FACTS_SCRIPT, parse_facts
from opsflow.tasks.ssh import execute

pytestmark = pytest.mark.usefixtures("ssh_credentials")

HOST = "lab04"
LOG_DIR = "/var/log/app"


def test_stdout_arrives_whole_far_beyond_the_old_tail(estate) -> None:
    result = execute(estate.host(HOST), ["seq", "1", "50000"])
    assert result.stdout == "".join(f"{n}\n" for n in range(1, 50001))


def test_output_over_its_bound_fails_loudly_naming_host_command_and_bound(estate) -> None:
    with pytest.raises(OutputTooLargeError) as caught:
        execute(estate.host(HOST), ["seq", "1", "100000"], max_output_bytes=10_000)
    message = str(caught.value)
    assert HOST in message and "seq 1 100000" in message and "10000 bytes" in message
    assert caught.value.bound == 10_000


@pytest.fixture
def rotated_logs():
    """150 rotated logs, 20 days old, in lab04's log directory; only the live log after."""
    clear = 'cd "$1" && find . -mindepth 1 ! -name app.log -exec rm -rf {} +'
    make = """cd "$1" && n=0
    while [ $n -lt 150 ]; do
      echo "old $n" > "app.log.$n.gz"; touch -d '20 days ago' "app.log.$n.gz"; n=$((n + 1))
    done"""
    assert run_on_host(HOST, ["sh", "-c", make, "sh", LOG_DIR]).returncode == 0
    yield {f"app.log.{n}.gz" for n in range(150)}
    run_on_host(HOST, ["sh", "-c", clear, "sh", LOG_DIR])


def test_clean_disk_sees_every_rotated_file(rotated_logs: set[str]) -> None:
    [done] = clean_disk(hosts=[HOST], pattern="app.log.*", older_than_days=7)
    assert {name.split()[0] for name in done.deleted} == rotated_logs
    left = run_on_host(HOST, ["ls", "-A", LOG_DIR]).stdout.split()
    assert not set(left) & rotated_logs


def test_gather_facts_parses_every_filesystem(estate) -> None:
    """The real facts script, its df listing extended by 80 filesystems, read over SSH."""
    more = """
    n=0
    while [ $n -lt 80 ]; do
      printf '/dev/mapper/volume-%s 1048576 524288 524288 50%% /srv/volume-%s\\n' $n $n
      n=$((n + 1))
    done"""
    result = execute(estate.host(HOST), ["sh", "-c", FACTS_SCRIPT + more])
    assert len(result.stdout) > 4000
    facts = parse_facts(HOST, result.stdout)
    volumes = {d.mount for d in facts.disks if d.mount.startswith("/srv/volume-")}
    assert volumes == {f"/srv/volume-{n}" for n in range(80)}
    assert facts.mem_total_kb > 0 and facts.kernel.startswith("Linux")
