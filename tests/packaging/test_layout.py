"""The README's Layout names every package of the product and every module in it, so a
newcomer's map of the tree is the tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import opsflow

PROJECT = Path(__file__).resolve().parents[2]
BULLET = re.compile(r"^(?P<indent> *)- `(?P<folder>[a-z_]+)/`(?P<rest>.*)$")


def readme_layout() -> dict[str, set[str]]:
    """Each folder the Layout section lists (as a repository path), with the names it gives."""
    text = (PROJECT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    bullets: dict[str, list[str]] = {}
    parents: list[str] = []
    current = None
    for line in section.splitlines():
        bullet = BULLET.match(line)
        if bullet:
            depth = len(bullet["indent"]) // 2
            parents[depth:] = [bullet["folder"]]
            current = "/".join(parents)
            bullets[current] = [bullet["rest"]]
        elif current is not None and line.startswith("  "):
            bullets[current].append(line)
        else:
            current = None
    listed = {}
    for folder, lines in bullets.items():
        quoted = re.findall(r"`([^`]+)`", " ".join(lines))
        listed[folder] = {name for q in quoted for name in re.findall(r"[a-z_]+", q)}
    return listed


def product_modules() -> dict[str, set[str]]:
    """Each package folder of the product (tracked, with an `__init__.py`) and its modules."""
    tracked = subprocess.run(
        ["git", "ls-files", "opsflow", *opsflow.SUBPACKAGES],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    folders = {str(Path(p).parent) for p in tracked if p.endswith("/__init__.py")}
    modules: dict[str, set[str]] = {folder: set() for folder in folders}
    for path in tracked:
        folder, name = str(Path(path).parent), Path(path).name
        if folder in modules and name.endswith(".py") and name != "__init__.py":
            modules[folder].add(name.removesuffix(".py"))
    return {folder: names for folder, names in modules.items() if names}


def test_the_readme_layout_names_every_package_and_module() -> None:
    listed = readme_layout()
    unnamed = {
        folder: sorted(names - listed.get(folder, set()))
        for folder, names in product_modules().items()
        if names - listed.get(folder, set())
    }
    assert not unnamed, f"modules the README's Layout does not name, by folder: {unnamed}"


def test_every_folder_the_readme_layout_lists_exists() -> None:
    missing = [folder for folder in readme_layout() if not (PROJECT / folder).is_dir()]
    assert not missing, f"the README's Layout lists folders that are not in the tree: {missing}"
