"""Constrained types used across the inventory, so every model validates names alike."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$"),
    Field(description="lower-case letters, digits, '-', '_' and '.', starting alphanumeric"),
]
"""A name for a host, group, service, team or block: safe in a shell, a URL and a label."""

Port = Annotated[int, Field(ge=1, le=65535, description="TCP port, 1-65535")]

ReleaseVersion = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$"),
    Field(
        description="a release's version, e.g. 1.2.0 or 1.2.0-rc.1+b7: letters, digits, '.', "
        "'+', '_' and '-', starting with a letter or digit, at most 64 characters"
    ),
]
"""A version of a service's release: one path component on a host (never '.' or '..', no
'/'), safe in a shell and a URL."""

Username = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$"),
    Field(description="POSIX account name: lower-case, starts with a letter or '_', <= 32 chars"),
]

_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def _check_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is neither an IP address nor a DNS name") from None
    return value


Address = Annotated[str, AfterValidator(_check_address)]
"""An IP address or a DNS name to reach a host at."""

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


def _check_public_key(value: str) -> str:
    parts = value.strip().split()
    if len(parts) < 2:
        raise ValueError("an SSH public key is 'TYPE BASE64 [comment]'")
    key_type, blob = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
        inner = raw[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValueError("the key's base64 body does not decode to an SSH key") from None
    if inner != key_type:
        raise ValueError(f"the key's body says {inner!r} but its type says {key_type!r}")
    comment = " ".join(parts[2:])
    if not re.fullmatch(r"[\w@.:+ -]*", comment):
        raise ValueError("the key's comment holds characters outside [A-Za-z0-9_@.:+ -]")
    return f"{key_type} {blob}" + (f" {comment}" if comment else "")


SSHPublicKey = Annotated[str, AfterValidator(_check_public_key)]
"""An OpenSSH public key line whose type and body agree; no options, no shell characters."""

LabelName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$"),
    Field(description="A Prometheus label name"),
]

Labels = dict[
    Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")],
    Annotated[str, StringConstraints(max_length=256)],
]
