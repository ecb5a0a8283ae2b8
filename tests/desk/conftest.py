"""A desk over a real store (SQLite and PostgreSQL) and the small written estate, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opsflow.desk.app import create_app
from opsflow.desk.estate import EstateCache
from opsflow.itsm.store.records import Records


@pytest.fixture
def desk_client(store: Records, desk_estate: Path) -> TestClient:
    return TestClient(create_app(store, EstateCache(desk_estate)))
