"""opsflow: ITIL service operation on Prefect, installed as this one package.

The repository's top-level folders (`flows/`, `tasks/`, `blocks/`, `inventory/`, `itsm/`,
`desk/`, `lab/`) are its subpackages (`opsflow.flows`, ...): a wheel puts them under
`opsflow/` (pyproject's `package-dir`), and in a checkout a finder maps exactly those names
to the folders where they are, so the same imports work without an install too (tests,
`prefect deploy` entrypoints, worktrees). Nothing generic (`tasks`, `flows`) lands in
site-packages beside another project's.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

SUBPACKAGES = ("flows", "tasks", "blocks", "inventory", "itsm", "desk", "lab")
"""The repository's folders that are opsflow's subpackages."""


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds `opsflow.<folder>` in the checkout's top-level folder of that name."""

    def __init__(self, checkout: Path) -> None:
        self.checkout = checkout

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.partition(".")
        if parent != __name__ or name not in SUBPACKAGES:
            return None
        folder = self.checkout / name
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def _in_checkout() -> Path | None:
    """The repository this package sits in, when it is not installed from a wheel."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and all(
        (root / name / "__init__.py").is_file() for name in SUBPACKAGES
    ):
        return root
    return None


_checkout = _in_checkout()
if _checkout is not None and not any(isinstance(f, _CheckoutFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CheckoutFinder(_checkout))
