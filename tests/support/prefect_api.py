"""What the session's Prefect server recorded: events and flow run states."""

from __future__ import annotations

from uuid import UUID

import requests
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL


def prefect_events(prefix: str) -> list[dict]:
    """Events in the Prefect server's feed whose name starts with `prefix`."""
    answer = requests.post(
        f"{PREFECT_API_URL.value()}/events/filter",
        json={"filter": {"event": {"prefix": [prefix]}}, "limit": 50},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["events"]


def run_state(flow_run_id: str) -> str:
    """The Prefect state type of a flow run (PAUSED, RUNNING, CRASHED…)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return run.state.type.value if run.state else "NONE"
