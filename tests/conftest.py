"""Session-wide real components: a lab of sshd hosts, a PostgreSQL cluster, a Prefect server."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from opsflow.itsm.store.records import Records
from tests.support.access_lab import (
    access_estate_dir,
    access_lab,
    access_people,
    access_records_url,
)
from tests.support.alerting import watch_lab
from tests.support.factories import write_small_estate
from tests.support.postgres import PostgresCluster, start_cluster
from tests.support.serving import ServedDesk, free_port, serve_app
from tests.support.waiting import wait_for

__all__ = ["access_estate_dir", "access_lab", "access_people", "access_records_url"]

LAB_HOSTS = 5
LAB_BASE_ADDRESSES = [f"127.0.{octet}.1" for octet in range(20, 30)]
"""Where the test lab may live; a run takes the first free one, so runs can overlap."""


FIXTURE_MARKERS = {
    "lab": frozenset({"lab", "access_lab", "mon_lab", "lab3"}),
    "prefect": frozenset({"prefect_server"}),
    "monitoring": frozenset({"monitoring"}),
    "browser": frozenset({"browser"}),
}
"""Which fixtures bring up which real component: sshd lab hosts, a Prefect server, Prometheus
and Alertmanager, Chromium. A test needing one gets its marker (and `slow`), so `make
test-fast` (`-m "not slow"`) runs the rest and `-m lab` picks out the lab's tests. Tests that
start their own Prometheus or Alertmanager (`tests.support.alerting`) are marked by hand."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the components its fixtures, direct or not, bring up; a test that
    needs any (from its fixtures, or marked by hand where it starts its own) is `slow`."""
    for item in items:
        needed = set(getattr(item, "fixturenames", ()))
        for name, fixtures in FIXTURE_MARKERS.items():
            if needed & fixtures:
                item.add_marker(name)
        if any(item.get_closest_marker(name) for name in FIXTURE_MARKERS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def session_environment() -> Iterator[pytest.MonkeyPatch]:
    """Environment variables the session's components set for the whole run (the lab's
    inventory, the records database, the desk's URL), put back when the session ends."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session", autouse=True)
def opsflow_home(
    tmp_path_factory: pytest.TempPathFactory, session_environment: pytest.MonkeyPatch
) -> Path:
    """A private OPSFLOW_HOME for every test, so none touches a running `make up`."""
    home = tmp_path_factory.mktemp("opsflow-home")
    session_environment.setenv("OPSFLOW_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def restored_globals() -> Iterator[None]:
    """What a test changes of the process's environment variables and working directory is
    put back after it, so no test depends on the order tests run in."""
    environment, cwd = dict(os.environ), Path.cwd()
    yield
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)
    os.chdir(cwd)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL 15 cluster for the session, stopped and deleted at its end."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def prefect_server(postgres: PostgresCluster) -> Iterator[None]:
    """One Prefect server for the whole session, its database on the session's PostgreSQL.

    What `prefect_test_harness` does, but it forces a SQLite database, whose lock makes the
    server answer 503 under the desk's load: a subprocess server on PostgreSQL instead, made
    the default for this process's threads too (they do not inherit the main context).
    """
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    postgres.create_database("prefect")
    database = postgres.url("prefect", driver="asyncpg")
    with temporary_settings({PREFECT_SERVER_DATABASE_CONNECTION_URL: database}):
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=90)
        try:
            with (
                temporary_settings({PREFECT_API_URL: server.api_url}),
                prefect.context._temporary_global_settings_context(
                    prefect.context.get_settings_context()
                ),
            ):
                yield
                APILogWorker.drain_all()
                EventsWorker.drain_all()
        finally:
            server.stop()


@pytest.fixture(scope="session")
def records_database(postgres: PostgresCluster, session_environment: pytest.MonkeyPatch) -> str:
    """The session desk's records database on PostgreSQL, set as OPSFLOW_DATABASE_URL so the
    desk and every desk process a test starts share it."""
    postgres.create_database("records")
    url = postgres.url("records")
    session_environment.setenv("OPSFLOW_DATABASE_URL", url)
    return url


@pytest.fixture(scope="session")
def sqlite_records_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite records database at the newest schema, migrated once a session for
    `records_url` to copy: copying costs milliseconds, migrating cost each test far more."""
    path = tmp_path_factory.mktemp("records-template") / "records.db"
    Records(f"sqlite:///{path}").db.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_records_template(postgres: PostgresCluster) -> str:
    """The name of a PostgreSQL records database at the newest schema, migrated once a
    session, that `records_url` copies (CREATE DATABASE … TEMPLATE)."""
    postgres.create_database("records_template")
    Records(postgres.url("records_template")).db.dispose()  # a template in use is not copied
    return "records_template"


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A records database for one test, at the newest schema and holding no records, on each
    backend: a copy of the backend's template (SQLite in the test's directory, or a new
    database on the session's PostgreSQL, dropped after the test with the connections the
    test's stores left open)."""
    if request.param == "sqlite":
        copy = tmp_path / "records.db"
        template = request.getfixturevalue("sqlite_records_template")
        with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(copy)) as to:
            source.backup(to)  # whole, whatever the template's WAL may still hold
        yield f"sqlite:///{copy}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    template = request.getfixturevalue("postgres_records_template")
    with cluster.scratch_database("records", template) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_records_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database for one test with nothing in it, not even tables, on each backend: for the
    tests of migrating one (SQLite in the test's directory, or a new database on the
    session's PostgreSQL, dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    with cluster.scratch_database("empty") as url:
        yield url


@pytest.fixture
def store(records_url: str) -> Iterator[Records]:
    """The records of one test, on each backend (`records_url`)."""
    records = Records(records_url)
    yield records
    records.db.dispose()


@pytest.fixture(scope="session")
def desk_estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small written estate of `tests.support.factories` (its people's tokens: `TOKENS`)."""
    return write_small_estate(tmp_path_factory.mktemp("desk-estate"))


@pytest.fixture(scope="session")
def lab(opsflow_home: Path, session_environment: pytest.MonkeyPatch):
    """Real sshd hosts on loopback, each with its own /etc, /home, /root and app service."""
    from opsflow.errors import LabError
    from opsflow.lab.hosts.down import lab_down
    from opsflow.lab.hosts.up import lab_up

    directory = opsflow_home / "lab"
    for base_address in LAB_BASE_ADDRESSES:
        try:
            lab = lab_up(directory, hosts=LAB_HOSTS, base_address=base_address)
            break
        except LabError as exc:
            if "in use" not in str(exc):
                raise
            lab_down(directory)
    else:
        pytest.fail(f"no free base address for the test lab in {LAB_BASE_ADDRESSES}")
    session_environment.setenv("OPSFLOW_INVENTORY", str(lab.estate_dir))
    try:
        yield lab
    finally:
        from opsflow.tasks.ssh_connections import close_connections

        close_connections()
        lab_down(directory)


@pytest.fixture(scope="session")
def estate(lab):
    """The lab's estate, loaded through the real inventory loader."""
    from opsflow.inventory.loader import load_estate

    return load_estate(lab.estate_dir)


@pytest.fixture(scope="session")
def ssh_credentials(prefect_server: None, lab):
    """The lab's client key saved as the `opsflow-lab` SSH credentials block."""
    from opsflow.blocks.registration import register_block_types, save_ssh_credentials

    register_block_types()
    return save_ssh_credentials("opsflow-lab", lab.client_key)


@pytest.fixture(scope="session")
def pager(tmp_path_factory: pytest.TempPathFactory, prefect_server: None):
    """A local HTTP receiver standing in for the on-call's pager, behind a notification block."""
    from opsflow.blocks.notifications import save_webhook_pager
    from opsflow.lab.pager import PagerServer

    server = PagerServer(("127.0.0.1", 0), tmp_path_factory.mktemp("pager") / "pages.log")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    save_webhook_pager("ops-pager", server.url)
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def generous_budget(lab) -> Iterator[None]:
    """The e2e tests remediate `app` several times an hour: raise the lab's budget for them."""
    path: Path = lab.estate_dir / "estate.yaml"
    original = path.read_text()
    path.write_text(yaml.safe_dump({**yaml.safe_load(original), "remediation_budget": 50}))
    yield
    path.write_text(original)


@pytest.fixture(scope="session")
def desk_token(prefect_server: None, lab) -> str:
    """The token routine jobs post events to the desk with (the lab's `routine-jobs`, a
    monitor), saved as the `opsflow-desk-token` Secret block: the one source of that block."""
    from opsflow.blocks.registration import save_desk_token
    from opsflow.lab.people import token_file

    token = token_file(lab.directory, "routine-jobs").read_text().strip()
    save_desk_token(token)
    return token


@pytest.fixture(scope="session")
def lab_desk(
    lab,
    ssh_credentials,
    pager,
    generous_budget,
    records_database: str,
    desk_token: str,
    session_environment: pytest.MonkeyPatch,
) -> Iterator[ServedDesk]:
    """The desk served by uvicorn on a free port and a worker (`opsflow.runtime.worker`) that
    triages and restores, both in this process, the records on the session's PostgreSQL.

    Routine jobs find it through OPSFLOW_DESK_URL and the `opsflow-desk-token` Secret block.
    """
    from opsflow.desk.server import build_desk
    from opsflow.runtime.worker import Worker

    app, dispatcher = build_desk(lab.estate_dir)
    with serve_app(app) as url:
        session_environment.setenv("OPSFLOW_DESK_URL", url)
        desk = ServedDesk(url, Worker(), dispatcher)
        desk.worker.start()
        yield desk
        desk.worker.stop()


@pytest.fixture
def desk_url(lab_desk: ServedDesk, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real desk's URL, also set as OPSFLOW_DESK_URL for the jobs."""
    monkeypatch.setenv("OPSFLOW_DESK_URL", lab_desk.url)
    yield lab_desk.url


@pytest.fixture(scope="module")
def monitoring(lab, lab_desk):
    """Real Prometheus and Alertmanager watching the lab, posting to the desk with a token.

    Module-scoped: while it runs, a service a test stops is restored within seconds, which
    tests outside the closed loop must not see.
    """
    from opsflow.lab.monitoring import monitoring_down, wait_until_scraped

    watch = watch_lab(lab, lab_desk.url)
    wait_until_scraped(watch, timeout_s=60)
    yield watch
    monitoring_down(watch.directory)


@pytest.fixture
def initial_release(lab) -> Iterator[None]:
    """Every lab host back on the app's initial release and healthy after the test."""
    from opsflow.lab.hosts.probes import app_health
    from opsflow.lab.hosts.releases import INITIAL_RELEASE
    from opsflow.lab.hosts.run import SVC, run_on_host

    yield
    current = "/var/lib/app/current"
    for host in lab.hosts:
        link = run_on_host(host.name, ["readlink", current], lab.directory).stdout.strip()
        if link != f"releases/{INITIAL_RELEASE}":
            run_on_host(
                host.name, ["ln", "-sfn", f"releases/{INITIAL_RELEASE}", current], lab.directory
            )
        if (app_health(host.address, timeout=2) or {}).get("version") != INITIAL_RELEASE:
            run_on_host(host.name, [SVC, "restart"], lab.directory)
    for host in lab.hosts:
        healthy = wait_for(
            lambda h=host: (app_health(h.address, timeout=2) or {}).get("version"),
            15,
            f"{host.name}'s app to answer",
        )
        assert healthy == INITIAL_RELEASE
