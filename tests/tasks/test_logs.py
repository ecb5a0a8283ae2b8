"""A service's live log is read for its tail with the log directory's identity, never through
a link planted there."""

from __future__ import annotations

import pytest

from opsflow.tasks.logs import read_log_tail
from tests.support.log_dirs import AS_NOBODY, HOST, TRAP_DIR, VICTIM, sh

pytestmark = pytest.mark.usefixtures("ssh_credentials")


def test_log_tail_does_not_read_through_a_planted_link(estate, trap) -> None:
    sh(f'{AS_NOBODY} ln -s "$2" "$1/trap.log"', TRAP_DIR, VICTIM)

    tail = read_log_tail(estate.host(HOST), trap)

    assert "secret" not in tail
    assert tail == f"not read: {TRAP_DIR}/trap.log is a symbolic link"
    sh(f'{AS_NOBODY} sh -c \'rm "$1" && echo "own line" > "$1"\' sh "$1/trap.log"', TRAP_DIR)
    assert read_log_tail(estate.host(HOST), trap) == "own line\n"
