"""opsflow.logs: in JSON every line of a process's log is one object, Prefect's own too."""

from __future__ import annotations

import json
import subprocess
import sys

_PROCESS = """
import logging

from opsflow.logs import configure_logging
configure_logging("json")
logging.getLogger("opsflow.desk.server").info("desk line")
logging.getLogger("prefect.tasks").info("Created task run 'triage-events'")
logging.getLogger("some.library").warning("a library's warning")
"""


def test_json_format_covers_prefect_and_other_libraries() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _PROCESS], capture_output=True, text=True, timeout=120, check=True
    )
    records = [json.loads(line) for line in run.stderr.splitlines()]
    assert [(r["logger"], r["level"]) for r in records] == [
        ("opsflow.desk.server", "INFO"),
        ("prefect.tasks", "INFO"),
        ("some.library", "WARNING"),
    ]
