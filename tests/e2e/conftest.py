"""The e2e tests use the session fixtures of tests/conftest.py (desk, monitoring, pager)."""

from tests.support import free_port, wait_for

__all__ = ["free_port", "wait_for"]
