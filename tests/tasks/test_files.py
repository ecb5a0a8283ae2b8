"""SFTP fetch from a real lab host, verified by checksum."""

from __future__ import annotations

import hashlib

import pytest

from opsflow.errors import PermanentError
from opsflow.tasks.files import fetch_file
from opsflow.tasks.ssh import execute

pytestmark = pytest.mark.usefixtures("ssh_credentials")


def test_fetched_file_matches_the_host(estate, tmp_path) -> None:
    host = estate.hosts[0]
    execute(host, ["sh", "-c", "head -c 3000000 /dev/urandom > /root/blob"])
    fetched = fetch_file.fn(host, "/root/blob", tmp_path / "blob")
    data = (tmp_path / "blob").read_bytes()
    assert len(data) == fetched.size == 3_000_000
    assert hashlib.sha256(data).hexdigest() == fetched.sha256
    assert execute(host, ["sha256sum", "/root/blob"]).stdout.split()[0] == fetched.sha256


def test_directories_and_relative_paths_are_refused(estate, tmp_path) -> None:
    with pytest.raises(PermanentError, match="Is a directory"):
        fetch_file.fn(estate.hosts[0], "/root", tmp_path / "x")
    with pytest.raises(PermanentError, match="must be absolute"):
        fetch_file.fn(estate.hosts[0], "root/blob", tmp_path / "x")
