"""The e2e tests use the session fixtures of tests/conftest.py (desk, monitoring, pager)."""

from tests.support.serving import free_port
from tests.support.waiting import wait_for

__all__ = ["free_port", "wait_for"]
