#!/usr/bin/env python3
"""Type-check opsflow as installed with mypy, with pyproject.toml's `[tool.mypy]` settings.

As for the import contracts (scripts/lint_imports.py), `opsflow.flows` is `flows/` in the
repository, not `opsflow/flows/`: mypy run on the checkout would not find the subpackages
where their imports say they are. So this lays the package out as a wheel would, in a
temporary folder of symbolic links, and runs mypy on `opsflow` there.

Usage: `.venv/bin/python scripts/lint_types.py` (`make lint` runs it); exit status 1 when
mypy reports an error.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from pathlib import Path

# Run as a script, its own folder is first on sys.path: the imports check's layout is one.
from lint_imports import ROOT, lay_out


def main() -> int:
    """Lay opsflow out as installed and run mypy on it with pyproject's settings."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    with tempfile.TemporaryDirectory(prefix="opsflow-types-") as layout:
        lay_out(pyproject, Path(layout))
        # mypy finds `opsflow` from the working directory: the laid-out one, not the
        # checkout's nor an editable install's.
        os.chdir(layout)
        from mypy import api

        out, err, status = api.run(
            ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", "-p", "opsflow"]
        )
        sys.stdout.write(out)
        sys.stderr.write(err)
        return status


if __name__ == "__main__":
    sys.exit(main())
