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

    @property
    def names(self) -> frozenset[str] | None:
        """The names this line is for when its patterns are all plain names (no wildcard,
        negation or hash): then a lookup is a set membership, not a match per pattern."""
        if any(p.startswith(("|1|", "!")) or "*" in p or "?" in p for p in self.patterns):
            return None
        return frozenset(p.lower() for p in self.patterns)

    def matches(self, name: str) -> bool:
        """True when `name` (`address` or `[address]:port`) is one this line is for."""
        matched = False
        for pattern in self.patterns:
            if pattern.startswith("|1|"):
                matched = matched or _hashed_matches(pattern, name)
            elif pattern.startswith("!"):
                if _wildcard_matches(pattern[1:].lower(), name.lower()):
                    return False
            elif _wildcard_matches(pattern.lower(), name.lower()):
                matched = True
        return matched


def _wildcard_matches(pattern: str, name: str) -> bool:
    """Whether `name` matches `pattern` (`*` any run, `?` any one character), in time
    proportional to their lengths' product at worst: a crafted pattern such as `*1*1*1*x`
    cannot make it backtrack for ever, as a regular expression of it would."""
    p = n = 0
    star, resume = -1, 0
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]):
            p, n = p + 1, n + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, n, p + 1
        elif star >= 0:
            resume += 1
            p, n = star + 1, resume
        else:
            return False
    return pattern[p:].strip("*") == ""


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
        self._by_name: dict[str, list[KnownHostLine]] = {}
        self._patterned: list[KnownHostLine] = []
        for line in lines:
            names = line.names
            if names is None:
                self._patterned.append(line)
            for name in names or ():
                self._by_name.setdefault(name, []).append(line)

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
        found = sorted(
            self._by_name.get(name.lower(), [])
            + [line for line in self._patterned if line.matches(name)],
            key=lambda line: line.number,
        )
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
