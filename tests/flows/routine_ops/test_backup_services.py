"""Backups are fetched whole, kept by retention, and really restore: content compared."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from opsflow.errors import PermanentError
from opsflow.flows.routine_ops.backup_services import backup_services
from opsflow.lab.hosts.run import run_on_host
from opsflow.tasks.backups import verify_restore
from tests.support.prefect_api import latest_artifact

pytestmark = pytest.mark.usefixtures("ssh_credentials")

HOST = "lab02"
DATA = "/var/lib/app/data"
PATHS = {"app": ["/etc/app", DATA]}


def sh(script: str, *args: str) -> str:
    result = run_on_host(HOST, ["sh", "-c", script, "sh", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


def host_checksums(*paths: str) -> dict[str, str]:
    """Ground truth, read inside the host's namespaces without SSH: path -> sha256."""
    out = sh('find "$@" -type f -exec sha256sum {} +', *paths)
    return {path: digest for digest, path in (line.split("  ", 1) for line in out.splitlines())}


@pytest.fixture
def data():
    sh(
        """mkdir -p "$1/nested/deeper"
        printf 'customer=42\\nplan=gold\\n' > "$1/notes.txt"
        head -c 300000 /dev/urandom > "$1/blob.bin"
        printf 'deep\\n' > "$1/nested/deeper/leaf.txt"
        printf 'with space\\n' > "$1/nested/a file.txt" """,
        DATA,
    )
    yield DATA
    sh('rm -rf -- "$1"', DATA)


def test_backups_really_restore(data: str, tmp_path: Path, estate) -> None:
    directory = tmp_path / "backups"
    [first] = backup_services(PATHS, hosts=[HOST], keep=1, backup_dir=str(directory))
    archive = Path(first.archive)
    assert archive.parent == directory / "app" / HOST
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == first.sha256
    assert (archive.parent / (archive.name + ".sha256")).read_text().split()[0] == first.sha256

    # Unpack it here, independently of the job, and compare with the host's own files.
    expected = host_checksums("/etc/app", data)
    assert len(expected) == 5
    restored = tmp_path / "restored"
    with tarfile.open(archive) as tar:
        tar.extractall(restored, filter="data")
    unpacked = {
        "/" + str(p.relative_to(restored)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in restored.rglob("*")
        if p.is_file()
    }
    assert unpacked == expected
    assert (restored / "var/lib/app/data/notes.txt").read_text() == "customer=42\nplan=gold\n"

    [row] = latest_artifact("backup-services")
    assert row["restore_test"] == "passed", row
    assert row["restore_detail"].startswith("5 of 5 files identical")
    leftovers = [n for n in sh("ls /var/tmp").split() if n.startswith("opsflow-")]
    assert leftovers == [], "temporary files were left on the host"

    # A second run makes a new archive; retention keeps one.
    [second] = backup_services(PATHS, hosts=[HOST], keep=1, backup_dir=str(directory))
    assert second.archive != first.archive
    assert sorted(p.name for p in archive.parent.iterdir()) == sorted(
        [Path(second.archive).name, Path(second.archive).name + ".sha256"]
    )

    # The restore test tells a changed file from a corrupt archive.
    sh('printf "edited after the backup\\n" > "$1/notes.txt"', data)
    result = verify_restore.fn(estate.host(HOST), second)
    assert result.passed and result.changed_since_backup == [f"{data}/notes.txt"]
    Path(second.archive).write_bytes(b"not a tarball")
    with pytest.raises(PermanentError, match="checksum no longer matches"):
        verify_restore.fn(estate.host(HOST), second)


def test_a_dry_run_archives_nothing(data: str, tmp_path: Path) -> None:
    assert backup_services(PATHS, hosts=[HOST], backup_dir=str(tmp_path), dry_run=True) == []
    assert not any(tmp_path.iterdir())
    rows = latest_artifact("backup-services")
    assert {r["path"] for r in rows} == {"/etc/app", data}
