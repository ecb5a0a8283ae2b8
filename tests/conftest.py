"""Session-wide real components: a lab of sshd hosts and a Prefect test server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

LAB_HOSTS = 5
LAB_BASE_ADDRESSES = [f"127.0.{octet}.1" for octet in range(20, 30)]
"""Where the test lab may live; a run takes the first free one, so runs can overlap."""


@pytest.fixture(scope="session")
def opsflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private OPSFLOW_HOME so tests never touch a running `make up`."""
    home = tmp_path_factory.mktemp("opsflow-home")
    os.environ["OPSFLOW_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One Prefect test server (SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def lab(opsflow_home: Path):
    """Real sshd hosts on loopback, each with its own /etc, /home, /root and app service."""
    from lab.hosts import lab_down, lab_up
    from opsflow.errors import LabError

    directory = opsflow_home / "lab"
    for base_address in LAB_BASE_ADDRESSES:
        try:
            lab = lab_up(directory, hosts=LAB_HOSTS, base_address=base_address)
            break
        except LabError as exc:
            if "in use" not in str(exc):
                raise
            lab_down(directory)
    else:
        pytest.fail(f"no free base address for the test lab in {LAB_BASE_ADDRESSES}")
    os.environ["OPSFLOW_INVENTORY"] = str(lab.estate_dir)
    try:
        yield lab
    finally:
        from tasks.ssh import close_connections

        close_connections()
        lab_down(directory)


@pytest.fixture(scope="session")
def estate(lab):
    """The lab's estate, loaded through the real inventory loader."""
    from inventory.loader import load_estate

    return load_estate(lab.estate_dir)


@pytest.fixture(scope="session")
def ssh_credentials(prefect_server: None, lab):
    """The lab's client key saved as the `opsflow-lab` SSH credentials block."""
    from blocks.registration import register_block_types, save_ssh_credentials

    register_block_types()
    return save_ssh_credentials("opsflow-lab", lab.client_key)
