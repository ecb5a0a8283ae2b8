"""known_hosts files as ssh writes them, hashed by ssh-keygen too: which key a host has pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opsflow.inventory.known_hosts import KeyNotPinnedError, KnownHosts


def keygen(directory: Path, kind: str) -> str:
    path = directory / kind
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("keys")
    return {kind: keygen(directory, kind) for kind in ("ed25519", "ecdsa", "rsa")}


def test_plain_names_ports_and_preferred_type(keys: dict[str, str]) -> None:
    known = KnownHosts.parse(
        f"# a comment\n\n"
        f"web1,10.0.0.1 {keys['rsa']}\n"
        f"10.0.0.1 {keys['ed25519']} root@web1\n"
        f"[10.0.0.2]:2222 {keys['ecdsa']}\n"
        f"10.0.0.2 {keys['rsa']}\n"
        f"WEB3 {keys['ecdsa']}\n"
    )
    assert known.key_for("web3", 22) == keys["ecdsa"]
    assert known.key_for("10.0.0.1", 22) == keys["ed25519"]
    assert known.key_for("10.0.0.2", 2222) == keys["ecdsa"]
    assert known.key_for("10.0.0.2", 22) == keys["rsa"]
    with pytest.raises(KeyNotPinnedError, match=r"no key for \[10.0.0.1\]:2200 in known_hosts"):
        known.key_for("10.0.0.1", 2200)


def test_hashed_by_ssh_keygen(tmp_path: Path, keys: dict[str, str]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"[db.example.com]:2222 {keys['ed25519']}\nweb.example.com {keys['rsa']}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    text = path.read_text()
    assert "example.com" not in text and text.startswith("|1|")
    known = KnownHosts.parse(text)
    assert known.key_for("db.example.com", 2222) == keys["ed25519"]
    assert known.key_for("WEB.example.com", 22) == keys["rsa"]
    with pytest.raises(KeyNotPinnedError):
        known.key_for("db.example.com", 22)


def test_wildcards_and_negation(keys: dict[str, str]) -> None:
    known = KnownHosts.parse(f"*.example.com,!bad.example.com {keys['ed25519']}\n")
    assert known.key_for("web.example.com", 22) == keys["ed25519"]
    with pytest.raises(KeyNotPinnedError):
        known.key_for("bad.example.com", 22)
    with pytest.raises(KeyNotPinnedError):
        known.key_for("example.org", 22)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        pytest.param(
            "@revoked * {ed25519}\nweb1 {ed25519}\n",
            "only key known_hosts has for web1 is @revoked",
        ),
        pytest.param(
            "@cert-authority *.example.com,web1 {ed25519}\n",
            "trusts a certificate authority for web1, not a host key",
        ),
        pytest.param(
            "web1 ssh-dss AAAAB3NzaC1kc3MAAACBAP\n",
            "known_hosts line 1 for web1: key type 'ssh-dss' is not one opsflow pins",
        ),
        pytest.param(
            "web2 {ed25519}\nweb1 ssh-ed25519 AAAA;rm -rf /\n",
            "line 2 for web1: the key's base64 body does not decode",
        ),
        pytest.param("web1\n", "line 1 for web1: not 'HOSTS TYPE KEY'"),
        pytest.param(
            "web2 {ed25519}\nweb? ssh-dss AAAA\nweb1 ssh-dss AAAA\n",
            "known_hosts line 2 for web1: key type 'ssh-dss'",
        ),
    ],
    ids=["revoked", "cert-authority", "unpinnable-type", "bad-body", "no-key", "first-by-number"],
)
def test_no_usable_key_says_why(keys: dict[str, str], lines: str, reason: str) -> None:
    known = KnownHosts.parse(lines.format(**keys))
    with pytest.raises(KeyNotPinnedError, match=reason):
        known.key_for("web1", 22)


def test_a_broken_line_for_another_host_refuses_nothing(keys: dict[str, str]) -> None:
    known = KnownHosts.parse(f"web2 ssh-ed25519 !!!\nweb1 {keys['ed25519']}\n@bogus web1 x y\n")
    assert known.key_for("web1", 22) == keys["ed25519"]


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("web?.example.com", "web1.example.com", True),
        ("web?.example.com", "web10.example.com", False),
        ("*.example.com", "example.com", False),
        ("a*b*c", "abxbbc", True),
        ("a*b*c", "abxbcd", False),
        ("*", "anything", True),
        ("[10.0.0.*]:2222", "[10.0.0.7]:2222", True),
        ("WEB*", "web3", True),
    ],
)
def test_wildcards_as_ssh_reads_them(
    keys: dict[str, str], pattern: str, name: str, matches: bool
) -> None:
    known = KnownHosts.parse(f"{pattern} {keys['ed25519']}\n")
    address, _, port = name.removeprefix("[").partition("]:")
    if matches:
        assert known.key_for(address, int(port or 22)) == keys["ed25519"]
    else:
        with pytest.raises(KeyNotPinnedError):
            known.key_for(address, int(port or 22))


def test_a_pattern_crafted_to_backtrack_is_refused_not_stuck(keys: dict[str, str]) -> None:
    """A line such as `*1*1*…*x` against `111…1` made a regular expression backtrack for
    hours; the lookup must end (the subprocess's bound only stops a failing test)."""
    line = "*1" * 14 + "*x " + keys["ed25519"]
    probe = (
        "import sys\n"
        "from opsflow.inventory.known_hosts import KeyNotPinnedError, KnownHosts\n"
        "known = KnownHosts.parse(sys.argv[1] + '\\n')\n"
        "try:\n"
        "    known.key_for('1' * 60, 22)\n"
        "except KeyNotPinnedError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, line], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"no key for {'1' * 60} in known_hosts"
