"""`opsflow --version`: the installed package's own version, for bug reports and upgrades."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata


def test_version_is_the_installed_packages() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "opsflow.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (
        f"opsflow {metadata.version('opsflow')} (prefect {metadata.version('prefect')}, "
        f"python {platform.python_version()})\n"
    )
