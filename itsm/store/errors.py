"""What the records store refuses, and why: no such record, a stale version, a lost race."""

from __future__ import annotations

from opsflow.errors import PermanentError, TransientError


class StoreConfigError(PermanentError, ValueError):
    """The database URL names a backend the store does not support."""


class RecordNotFoundError(PermanentError, LookupError):
    """No record of that type has that id or number."""

    def __init__(self, record_type: str, key: int | str):
        self.record_type = record_type
        self.key = key
        super().__init__(f"no {record_type} {key}")


class StaleVersionError(PermanentError, ValueError):
    """The caller changed a record from a version that is no longer current; re-read it first."""

    def __init__(self, record_type: str, record_id: int, expected: int, current: int):
        self.expected = expected
        self.current = current
        super().__init__(
            f"{record_type} {record_id} is at version {current}, not {expected}; "
            "re-read it and apply the change again"
        )


class ConcurrentUpdateError(TransientError):
    """The record's version changed under us on every attempt; trying again may succeed."""

    def __init__(self, record_type: str, key: int | str, attempts: int):
        super().__init__(f"{record_type} {key} changed concurrently {attempts} times in a row")
