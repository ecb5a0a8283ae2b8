"""Log directories on lab05 for the log tasks' tests: emptied around each test, or owned by
`nobody` with a root-only file to aim links at."""

from __future__ import annotations

import pytest

from tests.support.log_dirs import LOG_DIR, TRAP_DIR, VICTIM, VICTIM_TEXT, sh


@pytest.fixture
def log_dir():
    """Lab05's log directory holding only the live log, before and after the test."""
    clear = 'cd "$1" && find . -mindepth 1 ! -name app.log -exec rm -rf {} +'
    sh(clear, LOG_DIR)
    yield LOG_DIR
    sh(clear, LOG_DIR)


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
