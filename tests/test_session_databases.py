"""The session's Prefect server and desk keep their data in the session's PostgreSQL."""

from __future__ import annotations

import psycopg
from prefect import flow

from tests.support.postgres import PostgresCluster


@flow
def say_hello() -> str:
    return "hello"


def _dsn(postgres: PostgresCluster, database: str) -> str:
    return postgres.url(database).replace("postgresql+psycopg", "postgresql")


def test_prefect_server_records_flow_runs_in_postgresql(
    prefect_server: None, postgres: PostgresCluster
) -> None:
    state = say_hello(return_state=True)
    with psycopg.connect(_dsn(postgres, "prefect")) as connection:
        row = connection.execute(
            "SELECT state_type FROM flow_run WHERE id = %s", (state.state_details.flow_run_id,)
        ).fetchone()
    assert row == ("COMPLETED",)


def test_session_desk_keeps_its_records_in_postgresql(lab_desk, postgres: PostgresCluster) -> None:
    from opsflow.itsm.store.records import open_records

    store = open_records()
    assert store.db.dialect == "postgresql"
    with psycopg.connect(_dsn(postgres, "records")) as connection:
        tables = {r[0] for r in connection.execute("SELECT tablename FROM pg_tables")}
    assert {"incidents", "events", "audit"} <= tables
