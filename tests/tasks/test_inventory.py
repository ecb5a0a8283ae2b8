"""Flows keep acting on the last good estate through a broken edit of its files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsflow.errors import InventoryError
from opsflow.tasks.inventory import read_estate


@pytest.fixture
def estate_dir(lab: Any, prefect_server: None, tmp_path: Path) -> Path:
    directory = tmp_path / "estate"
    shutil.copytree(lab.estate_dir, directory)
    return directory


def _break(directory: Path) -> None:
    with (directory / "people.yaml").open("a") as people:
        people.write("  - name: [unclosed\n")


def test_a_broken_edit_leaves_the_last_good_estate_in_use(estate_dir: Path) -> None:
    good = read_estate(str(estate_dir))
    original = (estate_dir / "people.yaml").read_text()
    _break(estate_dir)
    assert read_estate(str(estate_dir)) == good, "triage must go on with the estate it had"

    data = yaml.safe_load(original)
    data["people"].append({"name": "zoe", "roles": ["requester"]})
    (estate_dir / "people.yaml").write_text(yaml.safe_dump(data))
    fixed = read_estate(str(estate_dir))
    assert "zoe" in {p.name for p in fixed.people}, "a fixed file is used at once"


def test_a_process_that_never_read_the_estate_is_told_what_is_wrong(
    estate_dir: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "never-read"
    shutil.copytree(estate_dir, fresh)
    _break(fresh)
    with pytest.raises(InventoryError, match=r"people\.yaml"):
        read_estate(str(fresh))


def test_every_edit_is_read_though_an_unchanged_estate_is_not_read_again(
    estate_dir: Path, tmp_path: Path
) -> None:
    """The estate is kept between runs while its files are unchanged; an edit of any of them,
    the known_hosts file outside the directory included, is read by the next run."""
    outside = tmp_path / "elsewhere" / "known_hosts"
    outside.parent.mkdir()
    lines = (estate_dir / "known_hosts").read_text().splitlines()
    outside.write_text("\n".join(lines) + "\n")
    settings_path = estate_dir / "estate.yaml"
    settings = yaml.safe_load(settings_path.read_text())
    settings["known_hosts"] = "../elsewhere/known_hosts"
    settings_path.write_text(yaml.safe_dump(settings))

    first = read_estate(str(estate_dir))
    assert read_estate(str(estate_dir)) is first, "unchanged files are not read again"

    # The first host's pinned key replaced, outside the estate's directory.
    (names, *_), (_, *second_key) = lines[0].split(), lines[1].split()
    outside.write_text("\n".join([f"{names} {' '.join(second_key)}", *lines[1:]]) + "\n")
    host = first.hosts[0].name
    changed = {h.name: h for h in read_estate(str(estate_dir)).hosts}[host]
    assert changed.host_key == " ".join(second_key), "the known_hosts edit was not read"
