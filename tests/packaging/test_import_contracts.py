"""The import contracts of `make lint` see opsflow as installed: an import that breaks DESIGN's
layers is caught in `flows/` as well as in `opsflow/`, whose folders import-linter would
otherwise not connect."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".opsflow"
)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository's files, to plant imports in."""
    copy = tmp_path / "opsflow"
    shutil.copytree(PROJECT, copy, ignore=NOT_COPIED, symlinks=True)
    return copy


def lint_imports(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(checkout / "scripts" / "lint_imports.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_keeps_every_contract(checkout: Path) -> None:
    result = lint_imports(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def test_a_flow_importing_the_desk_breaks_the_layers(checkout: Path) -> None:
    review = checkout / "flows" / "problem_review.py"
    review.write_text(
        review.read_text() + "\n\ndef planted() -> None:\n    import opsflow.desk.app  # noqa\n"
    )
    result = lint_imports(checkout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "opsflow.flows is not allowed to import opsflow.desk" in result.stdout
    assert "opsflow.flows.problem_review -> opsflow.desk.app" in result.stdout
