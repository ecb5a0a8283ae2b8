"""Schema migrations on real databases: each test runs on SQLite and on PostgreSQL.

The databases made before migrations are the ones commits 2a3d754 and d71d4a3 wrote
through their own store code, kept as SQL in tests/fixtures/records_schema/ (made by
make_fixtures.py there), so the tests need no git history.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Connection, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from opsflow.cli.main import app
from opsflow.itsm.migrations import (
    SchemaTooNewError,
    UnknownSchemaError,
    current,
    head,
    premigration,
    records_metadata,
)
from opsflow.itsm.records import EventIn, IncidentCreate
from opsflow.itsm.store.records import Records
from tests.support.factories import login_request

FIXTURES = Path(__file__).parents[1] / "fixtures" / "records_schema"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bob"
REPO = Path(__file__).parents[2]


@contextmanager
def connection(url: str, write: bool = False) -> Iterator[Connection]:
    """A connection of its own (no pool) to the database at `url`; with `write`, in a
    transaction committed when the block ends."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() if write else engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def run_sql(url: str, statement: str) -> None:
    """Run one SQL statement in the database at `url`, as someone other than opsflow would."""
    with connection(url, write=True) as conn:
        conn.execute(text(statement))


def load_fixture(url: str, commit: str) -> None:
    """Make the database at `url` the one `commit` wrote (see make_fixtures.py)."""
    backend = make_url(url).get_backend_name()
    sql = (FIXTURES / f"{commit}.{backend}.sql").read_text()
    if backend == "sqlite":
        with sqlite3.connect(make_url(url).database) as db:
            db.executescript(sql)
        return
    with connection(url, write=True) as conn:
        raw = conn.connection.driver_connection
        raw.execute(sql)  # no parameters: psycopg runs every statement


def tables(url: str) -> set[str]:
    with connection(url) as conn:
        return set(inspect(conn).get_table_names()) - {"sqlite_sequence"}


def schema_differences(url: str) -> list:
    """What Alembic finds between the database and the tables the code declares."""
    with connection(url) as conn:
        return compare_metadata(MigrationContext.configure(conn), records_metadata())


def unseen_differences(url: str) -> list[str]:
    """What `compare_metadata` does not look at: CHECK constraints, partial indexes' WHERE
    and SQLite's AUTOINCREMENT (batch ALTERs on SQLite copy tables and can drop them)."""
    found = []
    with connection(url) as conn:
        inspector = inspect(conn)
        backend = conn.dialect.name
        for table in records_metadata().sorted_tables:
            declared = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            reflected = {c["name"] for c in inspector.get_check_constraints(table.name)}
            if declared != reflected:
                found.append(f"{table.name} checks {sorted(reflected)} not {sorted(declared)}")
            partial = {
                i["name"]
                for i in inspector.get_indexes(table.name)
                if i["dialect_options"].get(f"{backend}_where") is not None
            }
            wanted = {
                i.name for i in table.indexes if i.dialect_options[backend]["where"] is not None
            }
            if partial != wanted:
                found.append(f"{table.name} partial indexes {sorted(partial)} not {wanted}")
            if backend == "sqlite":
                sql = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = :name"),
                    {"name": table.name},
                ).scalar_one()
                if ("AUTOINCREMENT" in sql) != table.dialect_options["sqlite"]["autoincrement"]:
                    found.append(f"{table.name} AUTOINCREMENT differs")
    return found


def revision_of(url: str) -> str | None:
    with connection(url) as conn:
        return current(conn)


@pytest.mark.parametrize("commit", ["2a3d754", "d71d4a3"])
def test_a_database_made_before_migrations_is_upgraded_and_used(
    empty_records_url: str, commit: str
) -> None:
    load_fixture(empty_records_url, commit)
    made_then = tables(empty_records_url)
    assert "alembic_version" not in made_then
    assert ("event_failures" in made_then) == (commit == "d71d4a3")

    store = Records(empty_records_url)
    assert store.db.schema.before is None
    assert store.db.schema.after == head()
    assert set(store.db.schema.premigration_tables) == made_then
    assert revision_of(empty_records_url) == head()
    assert schema_differences(empty_records_url) == []
    assert unseen_differences(empty_records_url) == []

    # What the old code wrote reads back through today's API.
    old = store.incidents.get("INC0000001")
    assert (old.host, old.service, old.state, old.priority) == ("web1", "app", "New", 2)
    assert [e.fingerprint for e in store.events.of_incident(old.id)] == ["fp1", "fp0"]
    assert [w.text for w in store.worklog.entries(old.id)] == ["looking at it"]
    assert store.audit.trail("incident", old.id)[0].action == "incident.opened"
    requests, grants = store.requests, store.access
    old_request = requests.get("REQ0000001")
    # Stored under the catalog item's first name, since renamed: it reads as it was stored.
    assert (old_request.item, old_request.inputs) == (
        "restart-service",
        {"service": "app", "host": "web1"},
    )
    assert (grants.get(1).username, grants.get(1).state) == ("alice", "requested")
    if commit == "d71d4a3":
        assert store.incidents.reported_by(2, "carol")

    # And today's code writes beside it, in the tables the upgrade added too.
    alert = EventIn(
        source="generic",
        fingerprint="new",
        status="firing",
        host="web3",
        service="app",
        summary="app is down on web3",
        occurred_at=NOW,
    )
    assert store.events.store([alert], NOW) == (1, 0)
    (pending,) = store.events.pending()
    assert store.events.mark_failed([(pending.id, "no rule")], NOW) == 1
    old_failures = {"no CI"} if commit == "d71d4a3" else set()
    assert {f.reason for f in store.events.failed()} == {"no rule"} | old_failures
    report = IncidentCreate(
        host="web3", service="app", symptom="slow", summary="web3 is slow", impact=3, urgency=3
    )
    reported = store.correlation.correlate(report, NOW, "dave", report="web3 is slow").incident
    assert reported.id > old.id
    assert store.incidents.reported_by(reported.id, "dave")
    store.worklog.add(old.id, "bob", "restarted app", NOW)
    assert len(store.worklog.entries(old.id)) == 2
    created = requests.create("restart-service", {"service": "app"}, "bob", "none", "bob", NOW)
    assert created.id == 2
    resolved = login_request("bob", "look at logs", duration_minutes=30, key=KEY)
    assert grants.request(resolved, "bob", NOW).id == 2
    assert store.problems.list() == []
    store.db.dispose()

    again = Records(empty_records_url)
    assert not again.db.schema.changed
    again.db.dispose()


def test_a_database_with_some_of_the_old_tables_gets_the_rest(empty_records_url: str) -> None:
    # Before migrations each module made its tables on first use: a database that never
    # saw problems, facts or maintenance windows lacks those tables.
    load_fixture(empty_records_url, "2a3d754")
    lazy = ("known_error_outcomes", "known_errors", "problems", "host_facts", "maintenance_windows")
    with connection(empty_records_url, write=True) as conn:
        for name in lazy:
            conn.execute(text(f"DROP TABLE {name}"))

    store = Records(empty_records_url)
    assert not set(lazy) & set(store.db.schema.premigration_tables)
    assert schema_differences(empty_records_url) == []
    assert store.incidents.get("INC0000001").host == "web1"
    store.db.dispose()


def test_an_empty_database_gets_exactly_the_schema_the_code_declares(
    empty_records_url: str,
) -> None:
    store = Records(empty_records_url)
    assert (store.db.schema.before, store.db.schema.after) == (None, head())
    assert store.db.schema.premigration_tables == ()
    store.db.dispose()
    differences = schema_differences(empty_records_url)
    assert differences == [], (
        "the code's tables differ from what the migrations make: write a revision "
        "(itsm.migrations.new_revision) for " + repr(differences)
    )
    assert tables(empty_records_url) == set(records_metadata().tables) | {"alembic_version"}
    assert unseen_differences(empty_records_url) == []


def test_the_first_revision_makes_the_schema_of_2a3d754(empty_records_url: str) -> None:
    from alembic import command

    from opsflow.itsm.migrations import alembic_config

    with connection(empty_records_url, write=True) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    load_fixture_schema = tables(empty_records_url) - {"alembic_version"}
    assert load_fixture_schema == set(premigration.AT_2A3D754)
    assert revision_of(empty_records_url) == "0001"
    store = Records(empty_records_url)
    assert (store.db.schema.before, store.db.schema.after) == ("0001", head())
    store.db.dispose()
    assert schema_differences(empty_records_url) == []


def test_opsflow_db_upgrade_twice_changes_nothing_the_second_time(
    empty_records_url: str, tmp_path: Path
) -> None:
    load_fixture(empty_records_url, "2a3d754")
    env = {"OPSFLOW_DATABASE_URL": empty_records_url, "OPSFLOW_HOME": str(tmp_path)}
    runner = CliRunner()

    shown = runner.invoke(app, ["db", "current", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["revision"] is None

    first = runner.invoke(app, ["db", "upgrade", "--json"], env=env)
    assert first.exit_code == 0, first.output
    done = json.loads(first.output)
    assert (done["before"], done["after"], done["changed"]) == (None, head(), True)
    assert "incidents" in done["premigration_tables"]
    made = tables(empty_records_url)

    second = runner.invoke(app, ["db", "upgrade"], env=env)
    assert second.exit_code == 0, second.output
    assert "nothing to do" in " ".join(second.output.split())  # as wrapped at any width
    assert tables(empty_records_url) == made
    assert revision_of(empty_records_url) == head()

    shown = runner.invoke(app, ["db", "current"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"revision {head()}, the newest" in " ".join(shown.output.split())


def test_processes_opening_one_new_database_at_once_migrate_it_once(empty_records_url: str) -> None:
    opener = (
        "import sys; from opsflow.itsm.store.records import Records; "
        "print(Records(sys.argv[1]).db.schema.before is None, flush=True)"
    )
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", opener, empty_records_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in openers]
    assert [p.returncode for p in openers] == [0] * 4, [err for _, err in results]
    migrated = [out.strip() for out, _ in results]
    assert 1 <= migrated.count("True") <= 4  # each saw an empty database or the work done
    assert revision_of(empty_records_url) == head()
    with connection(empty_records_url) as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    assert schema_differences(empty_records_url) == []


def test_tables_opsflow_did_not_make_are_refused_and_left_alone(empty_records_url: str) -> None:
    run_sql(empty_records_url, "CREATE TABLE incidents (id INTEGER PRIMARY KEY, title TEXT)")
    with pytest.raises(UnknownSchemaError, match="table incidents has columns"):
        Records(empty_records_url)
    assert tables(empty_records_url) == {"incidents"}


def test_a_database_a_newer_opsflow_migrated_is_refused(empty_records_url: str) -> None:
    Records(empty_records_url).db.dispose()
    run_sql(empty_records_url, "UPDATE alembic_version SET version_num = 'from-the-future'")
    with pytest.raises(SchemaTooNewError, match="from-the-future"):
        Records(empty_records_url)
