"""`opsflow up`: PostgreSQL, the Prefect server, lab, blocks and deployments on one machine,
until Ctrl-C.

One module, under 500 lines, on purpose: `up` is one ordered sequence over one supervisor and
one exit stack (each step started, waited for, and its stop registered before the next), and
reads best in that order. What it leaves in the home for other shells is `runtime.home`; the
supervisor, the PostgreSQL cluster and the served deployments are modules of their own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from rich.console import Console
from rich.text import Text

from opsflow.errors import OpsError
from opsflow.runtime.home import UP_ENV_KEYS, secure_home, write_up_env
from opsflow.runtime.supervisor import SupervisionError, Supervisor
from opsflow.settings import OpsflowSettings

if TYPE_CHECKING:
    from opsflow.runtime.postgres import Cluster

SERVER_START_TIMEOUT_S = 90.0
PROCESS_START_TIMEOUT_S = 180.0
"""How long the desk, a worker or the served deployments may take to be ready: each imports
Prefect (and the desk starts two serving processes), ~10 s apiece on a busy 2-core machine
and over a minute when the machine runs much else (seen in CI)."""
AUTH_STRING_FILE = "prefect-api-auth"
"""In the opsflow home: the auth string every caller of the Prefect API `up` starts must send."""
POSTGRES = "PostgreSQL"
"""The supervised server's name, as `up` reports it."""
POSTGRES_STOP_TIMEOUT_S = 60.0
"""Fast shutdown still writes a checkpoint: let it finish rather than make the next start
replay the WAL."""


@dataclass(frozen=True)
class LabPlaces:
    """Where the lab `up` brings up listens: its hosts from `base_address` (ports 2222 and
    18080 on each), Prometheus, the exporter, Alertmanager, and the stand-in pager
    (lab/pager.py; escalations land in logs/pages.log)."""

    base_address: str = "127.0.10.1"
    prometheus_port: int = 19090

    @property
    def exporter_port(self) -> int:
        return self.prometheus_port + 2

    @property
    def alertmanager_port(self) -> int:
        return self.prometheus_port + 3

    @property
    def pager_port(self) -> int:
        return self.prometheus_port + 9


class UpError(OpsError):
    """Something `opsflow up` starts did not come up."""


def metrics_targets(desk_url: str, workers: int) -> dict[str, list[str]]:
    """Where Prometheus scrapes what `up` starts (ADDRESS:PORT): the desk on its own port,
    and worker N's `/metrics` on the desk's port + N."""
    address = urlsplit(desk_url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    return {
        "desk": [f"{host}:{port}"],
        "workers": [f"127.0.0.1:{port + number}" for number in range(1, workers + 1)],
    }


def _wait_for(url: str, what: str, timeout_s: float, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UpError(f"{what} exited with status {process.returncode} before it was ready")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise UpError(f"{what} did not answer {url} within {timeout_s:.0f}s")


def prefect_auth_string(home: Path) -> str:
    """The auth string protecting the Prefect API `up` starts, made once and kept 0600.

    Kept across runs, so a browser given it once and flow runs still going keep working.
    """
    path = home / AUTH_STRING_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as out:
            out.write(f"opsflow:{secrets.token_urlsafe(32)}\n")
    auth_string = path.read_text().strip()
    if not auth_string:
        raise UpError(f"{path} is empty: remove it and `opsflow up` makes a new auth string")
    return auth_string


def prefect_env(settings: OpsflowSettings, port: int, auth_string: str | None) -> dict[str, str]:
    """Environment for every opsflow process `up` starts, as clients of the Prefect API.

    With `auth_string`, `up` runs its own Prefect server on `port`, which refuses callers
    without it; without, the API is the one PREFECT_API_URL names and its auth is the caller's.
    """
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    env.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    # Prefect's vacuum service deletes flow runs (with their logs and artifacts) past its
    # retention period (90 days by default), as prune-records does for opsflow's records.
    env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", '["events", "flow_runs"]')
    if auth_string is not None:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        env["PREFECT_API_AUTH_STRING"] = auth_string
        # An API key takes precedence over the auth string and our server would refuse it.
        env.pop("PREFECT_API_KEY", None)
    env["OPSFLOW_HOME"] = str(settings.home)
    return env


def start_prefect_server(
    supervisor: Supervisor, env: dict[str, str], log: Path, database_url: str | None = None
) -> None:
    """Start the Prefect server at env's PREFECT_API_URL, requiring its auth string; wait for it.

    The server alone is given PREFECT_SERVER_API_AUTH_STRING, and `database_url` (an
    `postgresql+asyncpg://` URL) as its database; without, its database is the environment's
    choice (SQLite under PREFECT_HOME by default). Its health endpoint stays open.
    """
    url = env["PREFECT_API_URL"]
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    server_env = {"PREFECT_SERVER_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]}
    if database_url is not None:
        server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    server = supervisor.start(
        "the Prefect server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", port],
        log,
        extra_env=server_env,
    )
    try:
        _wait_for(url + "/health", "the Prefect server", SERVER_START_TIMEOUT_S, server)
    except UpError:
        supervisor.stop("the Prefect server")
        raise


def start_postgres(cluster: Cluster, supervisor: Supervisor, log: Path) -> None:
    """Run the cluster's server under the supervisor, which starts it again if it dies; wait
    until it takes logins, then create the databases `up` keeps in it that are missing."""
    from opsflow.runtime.postgres import (
        check_can_start,
        create_databases,
        server_command,
        wait_until_ready,
    )

    check_can_start(cluster)
    argv, env = server_command(cluster)
    server = supervisor.start(POSTGRES, argv, log, env=env, stop_signal=signal.SIGINT)
    try:
        wait_until_ready(cluster, server, log)
        create_databases(cluster)
    except OpsError:
        supervisor.stop(POSTGRES, POSTGRES_STOP_TIMEOUT_S)
        raise


def prepare_records(url: str) -> None:
    """The records database exists and answers: bring its schema up to date here, once,
    before any process that uses it starts. The one place `up` readies the records."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from opsflow.itsm.migrations import upgrade

    try:
        upgrade(url)
    except SQLAlchemyError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        raise UpError(f"cannot open the records at {where}: {getattr(exc, 'orig', exc)}") from exc


def run_up(
    settings: OpsflowSettings,
    hosts: int,
    port: int,
    console: Console,
    lab_places: LabPlaces | None = None,
    workers: int = 2,
) -> None:
    """Bring everything up, run the health check once, then wait for Ctrl-C and stop it all.

    PostgreSQL first, in a cluster under the home, holding the Prefect server's database and
    the records; a Prefect server (PREFECT_API_URL), a Prefect database
    (PREFECT_SERVER_DATABASE_CONNECTION_URL) or records (OPSFLOW_DATABASE_URL) that the
    environment names are used instead.
    """
    started = time.monotonic()
    # From here on SIGTERM unwinds like Ctrl-C: what was started so far is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    lab_places = lab_places or LabPlaces()
    external_server = "PREFECT_API_URL" in os.environ
    own_prefect_database = not (
        external_server or "PREFECT_SERVER_DATABASE_CONNECTION_URL" in os.environ
    )
    own_records = settings.database_url is None
    secure_home(settings.home)
    auth_string = None if external_server else prefect_auth_string(settings.home)
    env = prefect_env(settings, port, auth_string)
    cluster = None
    if own_prefect_database or own_records:
        from opsflow.runtime.postgres import make_cluster

        cluster = make_cluster(settings.home / "postgres", settings.postgres_port)
        if own_records:
            env["OPSFLOW_DATABASE_URL"] = cluster.url("records")
    os.environ.update({k: env[k] for k in (*UP_ENV_KEYS, "OPSFLOW_HOME") if k in env})
    logs = settings.home / "logs"

    def restarting(name: str, status: int) -> None:
        console.print(Text(f"{name} exited (status {status}); starting it again", style="yellow"))

    supervisor = Supervisor(env, on_restart=restarting)
    with ExitStack() as stack:
        if cluster is not None:
            console.print(
                Text.assemble(
                    ("PostgreSQL", "bold"),
                    f" starting on 127.0.0.1:{cluster.port} (cluster in {cluster.directory}) …",
                )
            )
            start_postgres(cluster, supervisor, logs / "postgres.log")
            stack.callback(supervisor.stop, POSTGRES, POSTGRES_STOP_TIMEOUT_S)
        prepare_records(env["OPSFLOW_DATABASE_URL"])
        if not external_server:
            console.print(
                Text.assemble(("Prefect server", "bold"), f" starting on 127.0.0.1:{port} …")
            )
            start_prefect_server(
                supervisor,
                env,
                logs / "prefect-server.log",
                cluster.url("prefect", driver="asyncpg")
                if cluster is not None and own_prefect_database
                else None,
            )
            stack.callback(supervisor.stop, "the Prefect server")
        stack.callback(write_up_env(settings.home, env).unlink, missing_ok=True)
        _start_opsflow(settings, hosts, workers, supervisor, logs, stack, console, lab_places)
        console.print(f"Up in {time.monotonic() - started:.1f}s. Running the health check once …")
        from opsflow.cli.jobs import run_job

        run_job("health-check", console)
        _print_where_to_look(console, settings, port, lab_places, cluster, workers)
        _wait_until_interrupted(console, supervisor)


def _start_opsflow(
    settings: OpsflowSettings,
    hosts: int,
    workers: int,
    supervisor: Supervisor,
    logs: Path,
    stack: ExitStack,
    console: Console,
    places: LabPlaces,
) -> None:
    """Lab (when no estate is set), blocks, pager, desk, workers, monitoring and the served
    deployments."""
    from opsflow.blocks.notifications import save_webhook_pager
    from opsflow.blocks.registration import (
        register_block_types,
        save_http_credentials,
        save_ssh_credentials,
    )

    register_block_types()
    lab = None
    if settings.inventory is None:
        from opsflow.lab.hosts.down import lab_down
        from opsflow.lab.hosts.state import app_admin_token_file
        from opsflow.lab.hosts.up import lab_up
        from opsflow.lab.runbooks import ADMIN_CREDENTIALS

        console.print(Text.assemble(("Lab", "bold"), f" bringing up {hosts} hosts …"))
        lab = lab_up(settings.lab_dir, hosts=hosts, base_address=places.base_address)
        stack.callback(lab_down, settings.lab_dir)
        save_ssh_credentials("opsflow-lab", lab.client_key)
        save_http_credentials(ADMIN_CREDENTIALS, app_admin_token_file(lab.directory).read_text())
        supervisor.start(
            "the pager",
            [
                sys.executable,
                "-m",
                "opsflow.lab.pager",
                "--port",
                str(places.pager_port),
                "--log",
                str(logs / "pages.log"),
            ],
            logs / "pager.log",
        )
        stack.callback(supervisor.stop, "the pager")
        save_webhook_pager("ops-pager", f"http://127.0.0.1:{places.pager_port}/page")
        from opsflow.blocks.registration import save_desk_token
        from opsflow.lab.people import token_file as lab_token_file

        save_desk_token(lab_token_file(lab.directory, "routine-jobs").read_text())
    desk_port = int(settings.desk_url.rsplit(":", 1)[1].split("/")[0])
    console.print(Text.assemble(("Desk", "bold"), f" starting on {settings.desk_url} …"))
    desk = supervisor.start(
        "the desk",
        [sys.executable, "-m", "opsflow.desk.server", "--port", str(desk_port)],
        logs / "desk.log",
    )
    stack.callback(supervisor.stop, "the desk")
    _wait_for(f"{settings.desk_url}/api/v1/health", "the desk", PROCESS_START_TIMEOUT_S, desk)
    console.print(Text.assemble(("Workers", "bold"), f" starting {workers} …"))
    targets = metrics_targets(settings.desk_url, workers)
    for number, target in enumerate(targets["workers"], start=1):
        name = f"worker {number}"
        log = logs / f"worker-{number}.log"
        written = log.stat().st_size if log.is_file() else 0  # the log is appended to
        argv = [sys.executable, "-m", "opsflow.runtime.worker"]
        argv += ["--metrics-port", target.rsplit(":", 1)[1]]
        worker = supervisor.start(name, argv, log)
        stack.callback(supervisor.stop, name)
        _wait_for_log(log, written, "worker serving", name, worker)
    if lab is not None:
        from opsflow.lab.monitoring import (
            SelfWatch,
            monitoring_down,
            monitoring_up,
            wait_until_scraped,
        )
        from opsflow.lab.people import token_file

        console.print(
            Text.assemble(("Monitoring", "bold"), " Prometheus and Alertmanager watching the lab …")
        )
        monitoring = monitoring_up(
            lab,
            webhook_url=f"{settings.desk_url}/api/v1/events/alertmanager",
            webhook_token=token_file(lab.directory, "alertmanager").read_text(),
            prometheus_port=places.prometheus_port,
            alertmanager_port=places.alertmanager_port,
            exporter_port=places.exporter_port,
            watch_opsflow=SelfWatch(
                desk=tuple(targets["desk"]),
                workers=tuple(targets["workers"]),
                pager_url=f"http://127.0.0.1:{places.pager_port}/page",
            ),
        )
        stack.callback(monitoring_down, monitoring.directory)
        wait_until_scraped(monitoring, timeout_s=60)
    console.print(
        Text.assemble(("Deployments", "bold"), " serving every deployment of prefect.yaml …")
    )
    serving = supervisor.start(
        "the deployments", [sys.executable, "-m", "opsflow.runtime.serve"], logs / "serve.log"
    )
    stack.callback(supervisor.stop, "the deployments")
    _wait_for_deployments(serving)


def _wait_for_log(
    log: Path,
    offset: int,
    line: str,
    what: str,
    process: subprocess.Popen,
    timeout_s: float = PROCESS_START_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UpError(f"{what} exited with status {process.returncode} before it was ready")
        with log.open("rb") as written:
            written.seek(offset)
            if line.encode() in written.read():
                return
        time.sleep(0.25)
    raise UpError(f"{what} did not say {line!r} in {log} within {timeout_s:.0f}s")


def _wait_for_deployments(
    serving: subprocess.Popen, timeout_s: float = PROCESS_START_TIMEOUT_S
) -> None:
    from prefect.client.orchestration import get_client

    from opsflow.runtime.project import read_deployments

    names = {spec.name for spec in read_deployments()}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if serving.poll() is not None:
                raise UpError(f"serving the deployments failed (status {serving.returncode})")
            found = {d.name for d in client.read_deployments()}
            if names <= found:
                return
            time.sleep(0.5)
    raise UpError(f"deployments {sorted(names)} were not registered within {timeout_s:.0f}s")


def _print_where_to_look(
    console: Console,
    settings: OpsflowSettings,
    port: int,
    places: LabPlaces,
    cluster: Cluster | None,
    workers: int,
) -> None:
    from opsflow.lab.hosts.probes import lab_status

    console.print()
    console.print(
        Text.assemble(("opsflow is up.", "bold green"), f" Prefect UI: http://127.0.0.1:{port}")
    )
    console.print(f"  UI and API auth string: {settings.home / AUTH_STRING_FILE}")
    console.print(f"  runs:      http://127.0.0.1:{port}/runs")
    console.print(f"  artifacts: http://127.0.0.1:{port}/artifacts")
    if settings.inventory is None:
        for host in lab_status(settings.lab_dir):
            console.print(f"  lab host {host['name']}: ssh root@{host['address']} -p 2222")
        console.print(f"  client key: {settings.lab_dir / 'client_key'}")
    console.print(f"  desk API: {settings.desk_url}/docs  (token: {settings.lab_dir}/tokens/alice)")
    targets = metrics_targets(settings.desk_url, workers)
    names = ["desk", *(f"worker {n}" for n in range(1, workers + 1))]
    for name, target in zip(names, targets["desk"] + targets["workers"], strict=True):
        console.print(f"  metrics of the {name}: http://{target}/metrics")
    if settings.inventory is None:
        console.print(
            f"  Prometheus: http://127.0.0.1:{places.prometheus_port}   "
            f"Alertmanager: http://127.0.0.1:{places.alertmanager_port}"
        )
        console.print(
            "  pages to the on-call (escalations, opsflow's alerts on itself): "
            f"{settings.home / 'logs' / 'pages.log'}"
        )
    if cluster is not None:
        from opsflow.runtime.postgres import ROLE

        console.print(
            f"  PostgreSQL: 127.0.0.1:{cluster.port}, cluster in {cluster.data}, "
            f"role {ROLE}, password in {cluster.password_file}"
        )
    console.print(f"  logs: {settings.home / 'logs'}")
    console.print("Press Ctrl-C to stop everything opsflow started.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_until_interrupted(console: Console, supervisor: Supervisor) -> None:
    try:
        while True:
            supervisor.check()
            time.sleep(0.5)
    except SupervisionError as exc:
        console.print(Text(f"{exc}: stopping everything.", style="red"))
    except KeyboardInterrupt:
        console.print("\nStopping …")
