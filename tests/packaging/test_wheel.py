"""Installed from a wheel, opsflow is one package, `opsflow`, that finds its prefect.yaml and
loads every deployment's flow with no checkout in sight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # brings up its own daemons

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel built from the checkout, and what its build said."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(PROJECT)],
        check=True,
        capture_output=True,
        text=True,
    )
    [path] = out.glob("opsflow-*.whl")
    return path, built.stdout + built.stderr


@pytest.fixture(scope="module")
def wheel(wheel_build: tuple[Path, str]) -> Path:
    return wheel_build[0]


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "opsflow",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    for expected in (
        "opsflow/prefect.yaml",
        "opsflow/flows/event_triage.py",
        "opsflow/tasks/ssh.py",
        "opsflow/tasks/access/scripts/read_account.sh",
        "opsflow/desk/runners/carrier.py",
        "opsflow/itsm/migrations/versions/0001_schema_of_2a3d754.py",
        "opsflow/itsm/migrations/script.py.mako",
        "opsflow/monitoring/opsflow-rules.yml",
    ):
        assert expected in names, f"{expected} is not in the wheel"
    assert any(n.startswith("opsflow/desk/web/") for n in names)
    assert any(n.startswith("opsflow/lab/files/") for n in names)


def test_the_wheel_holds_every_file_of_the_checkout_package(
    wheel_build: tuple[Path, str],
) -> None:
    """A folder of modules or data added to the checkout but not to pyproject's `packages` works
    in a checkout; setuptools still ships it, warning that it will not for long."""
    import opsflow

    wheel, log = wheel_build
    assert "is absent from the `packages` configuration" not in log, log[-3000:]
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = {"opsflow": PROJECT / "opsflow"} | {
        f"opsflow/{name}": PROJECT / name for name in opsflow.SUBPACKAGES
    }
    tracked = subprocess.run(
        ["git", "ls-files", *(str(folder.relative_to(PROJECT)) for folder in folders.values())],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = []
    for path in tracked:
        top, _, rest = path.partition("/")
        inside = f"opsflow/{rest}" if top == "opsflow" else f"opsflow/{top}/{rest}"
        if inside not in names:
            missing.append(path)
    assert not missing, f"tracked but not in the wheel: {missing}"


def test_installed_it_reads_prefect_yaml_and_loads_every_flow(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import json, opsflow, opsflow.runtime.project as project\n"
        "from opsflow.tasks.access.steps import script\n"
        "specs = project.read_deployments()\n"
        "flows = {s.name: s.load_flow().name for s in specs}\n"
        "print(json.dumps({'package': opsflow.__file__, 'yaml': str(project.PREFECT_YAML),"
        " 'flows': flows, 'script': script('read_account')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    shown = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    found = json.loads(shown.stdout.splitlines()[-1])
    assert found["package"].startswith(str(site)), "the checkout was imported, not the wheel"
    assert found["yaml"] == str(site / "opsflow" / "prefect.yaml")
    declared = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    assert set(found["flows"]) == {d["name"] for d in declared}
    assert found["flows"]["event-triage"] == "event-triage"
    shipped = PROJECT / "tasks" / "access" / "scripts" / "read_account.sh"
    assert found["script"] == shipped.read_text(), "the access scripts are not in the wheel"
