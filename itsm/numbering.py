"""Record numbers: a kind's prefix and the zero-padded id (INC0000007), and ids as people type them.

One numbering for every kind of record, so an id from a URL or a command line is read the same
way everywhere: 7, "7" or the kind's number; ASCII digits only (Python's `isdigit` also
accepts "³", which `int` refuses) and within the 64-bit ids the databases hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_RECORD_ID = 2**63 - 1
NUMBER_DIGITS = 7
"""A number has at least this many digits after its prefix (INC0000007)."""


@dataclass(frozen=True)
class Numbering:
    """How people name the records of one kind: `prefix` followed by the zero-padded id."""

    prefix: str

    def number(self, record_id: int) -> str:
        """The record's number, e.g. INC0000042 for id 42."""
        return f"{self.prefix}{record_id:0{NUMBER_DIGITS}d}"

    def parse(self, key: int | str) -> int | None:
        """The id in 7, "7" or this kind's number; None when it is none of those (or beyond
        64 bits)."""
        if isinstance(key, int):
            return key if 0 < key <= MAX_RECORD_ID else None
        text = key.strip().upper()
        digits = text.removeprefix(self.prefix)
        if digits != text and len(digits) < NUMBER_DIGITS:
            return None
        if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(MAX_RECORD_ID)):
            return None
        value = int(digits)
        return value if 0 < value <= MAX_RECORD_ID else None


class NumberedRecord(BaseModel):
    """A record people name by its number, which always follows from its id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    numbering: ClassVar[Numbering]

    id: int
    number: str = Field(
        default="", description="The kind's prefix followed by the zero-padded id (INC0000007)."
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_number(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("number") and isinstance(data.get("id"), int):
            data = {**data, "number": cls.numbering.number(data["id"])}
        return data

    @model_validator(mode="after")
    def _number_matches_id(self) -> Self:
        if self.number != self.numbering.number(self.id):
            raise ValueError(f"number {self.number!r} does not match id {self.id}")
        return self
