"""When a task should be tried again: only for transient errors, never for permanent ones."""

from __future__ import annotations

from typing import Any

from opsflow.errors import TransientError


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry only when the failure is a `TransientError`."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, TransientError)


RETRY_TRANSIENT: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [1, 3],
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
}
"""Task options for idempotent tasks: two jittered retries, on transient errors only."""

RETRY_TRANSIENT_LONGER: dict[str, Any] = {
    **RETRY_TRANSIENT,
    "retries": 3,
    "retry_delay_seconds": [1, 2, 4],
}
"""Task options for idempotent calls to a peer that may be restarting (a host's sshd, the
desk): three jittered retries over about 7 s, on transient errors only."""
