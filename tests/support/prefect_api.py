"""What the session's Prefect server recorded: events, flow run states, artifacts."""

from __future__ import annotations

import json
from typing import Any
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


def latest_artifact(key: str) -> Any:
    """The data of the newest artifact with `key` (a table's rows, or markdown text)."""
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_latest_artifacts() if a.key == key]
    assert found, f"no artifact {key}"
    data = found[0].data
    if isinstance(data, str) and data[:1] in "[{":
        return json.loads(data)
    return data
