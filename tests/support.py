"""Small helpers for tests: free ports and polling instead of sleeping."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import requests
from prefect.settings import PREFECT_API_URL


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def prefect_events(prefix: str) -> list[dict]:
    """Events in the Prefect server's feed whose name starts with `prefix`."""
    answer = requests.post(
        f"{PREFECT_API_URL.value()}/events/filter",
        json={"filter": {"event": {"prefix": [prefix]}}, "limit": 50},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["events"]
