"""This package's tests act on the access lab (tests/support/access_lab.py): while they run,
opsflow points at its estate and records, and a desk with a worker serves them."""

from tests.support.access_lab import access_desk, access_env, access_estate

__all__ = ["access_desk", "access_env", "access_estate"]
