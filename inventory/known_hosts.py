"""An OpenSSH known_hosts file as data: which key is pinned for an address and port.

Read the way `ssh` reads it (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): comma-separated host
patterns with `*` and `?` wildcards and `!` negations, `[address]:port` for a port other than
22, hashed entries (`|1|salt|hash`, `HashKnownHosts yes`), and the `@revoked` and
`@cert-authority` markers. Nothing here reads a file: callers pass the text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from opsflow.inventory.types import KEY_TYPES, SSHPublicKey

DEFAULT_PORT = 22

_KEY = TypeAdapter(SSHPublicKey)


class KeyNotPinnedError(LookupError):
    """No usable key is pinned for a host; the message says why."""


@dataclass(frozen=True)
class KnownHostLine:
    """One key line of a known_hosts file."""

    number: int
    marker: str | None
    patterns: tuple[str, ...]
    key_type: str
    key: str | None
    problem: str | None

    def matches(self, name: str) -> bool:
        """True when `name` (`address` or `[address]:port`) is one this line is for."""
        matched = False
        for pattern in self.patterns:
            if pattern.startswith("|1|"):
                matched = matched or _hashed_matches(pattern, name)
            elif pattern.startswith("!"):
                if _pattern_matches(pattern[1:], name):
                    return False
            elif _pattern_matches(pattern, name):
                matched = True
        return matched


def _pattern_matches(pattern: str, name: str) -> bool:
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()
    )
    return re.fullmatch(regex, name.lower()) is not None


def _hashed_matches(pattern: str, name: str) -> bool:
    try:
        _, _, salt, digest = pattern.split("|")
        salt_raw = base64.b64decode(salt, validate=True)
        digest_raw = base64.b64decode(digest, validate=True)
    except (ValueError, binascii.Error):
        return False
    ours = hmac.new(salt_raw, name.lower().encode(), hashlib.sha1).digest()
    return hmac.compare_digest(ours, digest_raw)


def host_pattern(address: str, port: int) -> str:
    """The name ssh looks an address up by: the address itself on port 22, else `[address]:port`."""
    return address if port == DEFAULT_PORT else f"[{address}]:{port}"


class KnownHosts:
    """The key lines of one known_hosts file, to look hosts' keys up in."""

    def __init__(self, lines: list[KnownHostLine]) -> None:
        self.lines = lines

    @classmethod
    def parse(cls, text: str) -> KnownHosts:
        """Read known_hosts text. A malformed line is kept with its problem and, as ssh does,
        passed over: it is named only for a host with no usable key."""
        lines = []
        for number, raw in enumerate(text.splitlines(), 1):
            parts = raw.split()
            if not parts or parts[0].startswith("#"):
                continue
            marker = None
            if parts[0].startswith("@"):
                marker, parts = parts[0], parts[1:]
            if len(parts) < 3:
                lines.append(
                    KnownHostLine(
                        number, marker, tuple(parts[:1]), "", None, "not 'HOSTS TYPE KEY'"
                    )
                )
                continue
            patterns = tuple(p for p in parts[0].split(",") if p)
            key_type = parts[1]
            key, problem = None, None
            if marker not in (None, "@revoked", "@cert-authority"):
                problem = f"unknown marker {marker!r}"
            elif key_type not in KEY_TYPES:
                problem = f"key type {key_type!r} is not one opsflow pins ({', '.join(KEY_TYPES)})"
            else:
                try:
                    key = _KEY.validate_python(f"{key_type} {parts[2]}")
                except ValidationError as exc:
                    problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
            lines.append(KnownHostLine(number, marker, patterns, key_type, key, problem))
        return cls(lines)

    def key_for(self, address: str, port: int) -> str:
        """The key pinned for `address`:`port`, preferring ed25519, then ECDSA, then RSA.

        Raises:
            KeyNotPinnedError: no line is for this host, or only revoked keys, keys of types
                opsflow does not pin or malformed lines are (the first one named by number).
        """
        name = host_pattern(address, port)
        found = [line for line in self.lines if line.matches(name)]
        revoked = {line.key for line in found if line.marker == "@revoked"}
        keys = [line.key for line in found if line.marker is None and line.key]
        usable = [key for key in keys if key not in revoked]
        if usable:
            return min(usable, key=lambda key: KEY_TYPES.index(key.split()[0]))
        if keys:
            raise KeyNotPinnedError(f"the only key known_hosts has for {name} is @revoked")
        unusable = [line for line in found if line.problem and line.marker is None]
        if unusable:
            line = unusable[0]
            raise KeyNotPinnedError(f"known_hosts line {line.number} for {name}: {line.problem}")
        if any(line.marker == "@cert-authority" for line in found):
            raise KeyNotPinnedError(
                f"known_hosts trusts a certificate authority for {name}, not a host key: "
                "opsflow pins host keys"
            )
        raise KeyNotPinnedError(f"no key for {name} in known_hosts")
