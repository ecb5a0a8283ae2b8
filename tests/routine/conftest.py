"""Routine jobs against the real lab, with the real desk where their findings become events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client

DESK_TOKEN_BLOCK = "opsflow-desk-token"


@pytest.fixture(scope="session")
def desk_token(prefect_server: None, lab) -> str:
    """The lab monitor's token saved as the Secret block routine jobs post events with."""
    from prefect.blocks.system import Secret

    from opsflow.lab.people import token_file

    token = token_file(lab.directory, "alertmanager").read_text().strip()
    Secret(value=token).save(DESK_TOKEN_BLOCK, overwrite=True)
    return token


@pytest.fixture
def desk_url(desk, desk_token: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real desk's URL, also set as OPSFLOW_DESK_URL for the jobs."""
    monkeypatch.setenv("OPSFLOW_DESK_URL", desk.url)
    yield desk.url


def latest_artifact(key: str) -> Any:
    """The data of the newest artifact with `key` (a table's rows, or markdown text)."""
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_latest_artifacts() if a.key == key]
    assert found, f"no artifact {key}"
    data = found[0].data
    if isinstance(data, str) and data[:1] in "[{":
        return json.loads(data)
    return data
