"""Record ids as people type them: 7, "7" or a prefixed number such as "INC0000007".

One parser for every kind of record, so an id from a URL or a command line is read the same
way everywhere: ASCII digits only (Python's `isdigit` also accepts "³", which `int` refuses)
and within the 64-bit ids the databases hold.
"""

from __future__ import annotations

MAX_RECORD_ID = 2**63 - 1
NUMBER_DIGITS = 7
"""A prefixed number has at least this many digits (INC0000007)."""


def parse_record_id(key: int | str, prefix: str) -> int | None:
    """The id in `key`, or None when it is no id of this kind (or beyond 64 bits)."""
    if isinstance(key, int):
        return key if 0 < key <= MAX_RECORD_ID else None
    text = key.strip().upper()
    digits = text.removeprefix(prefix)
    if digits != text and len(digits) < NUMBER_DIGITS:
        return None
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(MAX_RECORD_ID)):
        return None
    value = int(digits)
    return value if 0 < value <= MAX_RECORD_ID else None
