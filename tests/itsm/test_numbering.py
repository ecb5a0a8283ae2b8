"""One parser reads record ids as people and URLs give them, hostile ones included."""

from __future__ import annotations

import pytest

from opsflow.itsm.numbering import MAX_RECORD_ID, Numbering
from opsflow.itsm.store.errors import RecordNotFoundError
from opsflow.itsm.store.records import Records


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (7, 7),
        ("7", 7),
        (" inc0000042 ", 42),
        ("INC0000042", 42),
        (str(MAX_RECORD_ID), MAX_RECORD_ID),
        ("INC42", None),  # a number has seven digits at least
        ("REQ0000042", None),  # another kind's number
        ("³", None),  # isdigit() says yes, int() refuses it
        ("\u0664\u0662", None),  # Arabic-Indic digits: not an id anyone typed here
        ("INC" + "\u0660" * 5 + "\u0664\u0662", None),
        (str(MAX_RECORD_ID + 1), None),
        ("9" * 400, None),
        (0, None),
        (-3, None),
        ("", None),
    ],
)
def test_ids_are_ascii_digits_within_64_bits(key: int | str, expected: int | None) -> None:
    assert Numbering("INC").parse(key) == expected


@pytest.mark.parametrize("key", ["³", "9" * 40, "INC" + "9" * 30])
def test_a_hostile_id_is_not_found_rather_than_a_crash(records_url: str, key: str) -> None:
    store = Records(records_url)
    with pytest.raises(RecordNotFoundError):
        store.incidents.get(key)
