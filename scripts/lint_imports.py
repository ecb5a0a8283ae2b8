#!/usr/bin/env python3
"""Check the import contracts in pyproject.toml (`[tool.importlinter]`) on opsflow as installed.

import-linter reads a package's imports from the files under the package's folder, but in
the repository `opsflow.flows` is `flows/`, not `opsflow/flows/` (pyproject's `package-dir`
for a wheel, a finder in `opsflow/__init__.py` for a checkout): run on the checkout as it
is, it would see only `opsflow/`'s own modules and pass whatever `flows/` imports. So this
lays the package out as a wheel would, in a temporary folder of symbolic links made from
`package-dir`, and runs import-linter there; the other root packages the contracts name
(`bench`, `tests`) are linked beside it as they are.

Usage: `.venv/bin/python scripts/lint_imports.py` (`make lint` runs it); exit status 1 when a
contract is broken.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lay_out(pyproject: dict, into: Path) -> None:
    """Link each package of `package-dir` where a wheel would put it, under `into`."""
    package_dir: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dir.items(), key=lambda item: item[0].count(".")):
        target = into.joinpath(*package.split("."))
        if package.count(".") == 0:
            # The top-level package's own folder holds the others' places: a real folder
            # whose entries are links, so the subpackages can be linked into it.
            target.mkdir()
            for entry in (ROOT / folder).iterdir():
                if entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(ROOT / folder, target_is_directory=True)
    for other in pyproject["tool"]["importlinter"]["root_packages"]:
        if not into.joinpath(other).exists():
            into.joinpath(other).symlink_to(ROOT / other, target_is_directory=True)


def main() -> int:
    """Lay opsflow out as installed and run lint-imports on it with pyproject's contracts."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    with tempfile.TemporaryDirectory(prefix="opsflow-imports-") as layout:
        lay_out(pyproject, Path(layout))
        # lint-imports puts the working directory first on sys.path: there, `opsflow` is
        # the laid-out one, not the checkout's nor an editable install's.
        os.chdir(layout)
        from importlinter.cli import lint_imports

        return lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)


if __name__ == "__main__":
    sys.exit(main())
