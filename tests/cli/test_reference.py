"""docs/cli.md is the CLI's own account of itself: it fails here the moment they differ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from opsflow.cli.reference import REFERENCE, render_reference


def test_the_committed_reference_is_the_clis() -> None:
    assert REFERENCE.read_text() == render_reference(), (
        "docs/cli.md is out of date with the CLI: run `make docs` "
        "(python -m opsflow.cli.reference) and commit it"
    )


def test_it_documents_every_command_and_option() -> None:
    reference = render_reference()
    for heading in ("## `opsflow incident`", "### `opsflow incident list`", "## `opsflow lab`"):
        assert heading in reference
    assert "#### `opsflow inventory import ansible`" in reference
    assert "* `--known-hosts <path>`" in reference
    assert "* `--version`" in reference


def test_check_fails_on_a_stale_reference(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(render_reference().replace("--known-hosts", "--known-host"))
    command = [sys.executable, "-m", "opsflow.cli.reference", "--path", str(stale)]
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert checked.returncode == 1
    assert f"{stale} is out of date" in checked.stderr
    subprocess.run(command, check=True, capture_output=True)
    assert stale.read_text() == render_reference()
    assert subprocess.run([*command, "--check"], check=False).returncode == 0
