"""Shared pieces of the benchmarks: processes, a Prefect server, estates, payloads, results.

Everything here talks to 127.0.0.1 (or the bench labs' loopback addresses) only, and every
process it starts is stopped by its own PID (its process group) when the context exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PYTHON = sys.executable
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p90, p99, max of `values` (seconds stay seconds)."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values) if values else float("nan"),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
    }


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(threshold: float = 2.0, timeout_s: float = 300.0) -> list[float]:
    """Wait (up to `timeout_s`) for the 1-minute load average to fall under `threshold`.

    The machine is shared: a benchmark started while someone's test suite saturates both
    cores measures them, not us. Returns the load averages when it gave up or went ahead.
    """
    deadline = time.monotonic() + timeout_s
    announced = False
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        if not announced:
            print(
                f"waiting up to {timeout_s:g} s for the load average {loadavg()} to fall "
                f"under {threshold:g}",
                flush=True,
            )
            announced = True
        time.sleep(5)
    return loadavg()


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: keep its directory, wait for a quiet machine first."""
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=2.0,
        help="first wait (up to 5 min) for the 1-min load average to fall under this; 0: don't",
    )


@contextlib.contextmanager
def run_directory(name: str, args: argparse.Namespace) -> Iterator[tuple[Path, list[float]]]:
    """A fresh directory for one benchmark run, and the load averages once the machine is quiet.

    The directory is removed afterwards unless `--keep` asked to look into it.
    """
    root = Path(tempfile.mkdtemp(prefix=f"opsflow-bench-{name}-"))
    load_before = wait_for_quiet(args.quiet_load) if args.quiet_load else loadavg()
    try:
        yield root, load_before
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def git_revision() -> str:
    """The commit the work tree is at, with '+dirty' when it has changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def write_result(name: str, data: dict[str, Any], line: str, module: str | None = None) -> Path:
    """Write results/<name>.json and append a dated line to results/README.md.

    `module` is the benchmark's module under bench/ when it is not `name`.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    record = {
        "benchmark": name,
        "at": stamp,
        "command": " ".join(
            [".venv/bin/python", "-m", f"bench.{module or name}", *map(shlex.quote, sys.argv[1:])]
        ),
        "revision": git_revision(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    readme = RESULTS / "README.md"
    if not readme.exists():
        readme.write_text(
            "# Benchmark results\n\nOne line per run, newest last; the JSON beside this file "
            "holds the latest run of each benchmark in full.\n\n"
        )
    with readme.open("a") as out:
        out.write(f"- {stamp} `{name}` ({record['revision']}, load {loadavg()}): {line}\n")
    return path


# --- processes and ports -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _loopback(url: str) -> str:
    """`url` itself, refused unless it is plain HTTP to a loopback address."""
    if not url.startswith("http://127."):
        raise ValueError(f"benchmarks talk to loopback only, not {url!r}")
    return url


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple:
    """(status, body) of a GET, (0, b"") when nothing answers."""
    request = urllib.request.Request(_loopback(url), headers=headers or {})  # noqa: S310
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


def http_post_json(
    url: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, bytes]:
    """(status, body) of a JSON POST."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310
        _loopback(url),
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check, timeout_s: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check()` until it returns something truthy; RuntimeError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def process(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` in its own session, output to `log`; on exit TERM then KILL its group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Stop a process started by `process` and everything in its process group."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Children the leader left behind in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- Prefect ----------------------------------------------------------------------------------


@contextlib.contextmanager
def prefect_server(
    directory: Path,
    timeout_s: float = 120.0,
    database_url: str | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """A Prefect server (no UI) in its own PREFECT_HOME, on `database_url` (an asyncpg URL)
    or else SQLite, on `port` or a free one; yields its API URL."""
    port = port or free_port()
    home = directory / "prefect-server"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_API_URL": "",
        # Log the errors it answers 503 for (clients then back off ~2 s): see the log.
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    argv = [
        str(Path(PYTHON).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-ui",
        "--analytics-off",
    ]
    log = directory / "prefect-server.log"
    url = f"http://127.0.0.1:{port}/api"
    with process(argv, log, env) as proc:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited:\n{tail(log)}")
            return http_get(url + "/health", timeout=2.0)[0] == 200

        wait_until(healthy, timeout_s, "the Prefect server", interval=0.25)
        yield url


@contextlib.contextmanager
def postgres(*databases: str) -> Iterator[Any]:
    """A throwaway PostgreSQL 15 cluster (the tests' own) with `databases` made in it."""
    from tests.support.postgres import start_cluster

    cluster = start_cluster()
    try:
        for name in databases:
            cluster.create_database(name)
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def workers(count: int, env: dict[str, str], logs: Path) -> Iterator[list[subprocess.Popen]]:
    """`count` opsflow workers (`python -m opsflow.runtime.worker`), each serving."""
    with contextlib.ExitStack() as stack:
        started = []
        for n in range(count):
            log = logs / f"worker-{n + 1}.log"
            started.append(
                (
                    stack.enter_context(
                        process([PYTHON, "-m", "opsflow.runtime.worker"], log, env)
                    ),
                    log,
                )
            )
        for proc, log in started:

            def serving(proc: subprocess.Popen = proc, log: Path = log) -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited:\n{tail(log)}")
                return "worker serving" in log.read_text(errors="replace")

            wait_until(serving, 60, "the workers to serve", interval=0.1)
        yield [proc for proc, _ in started]


def use_prefect_api(url: str, client_home: Path) -> None:
    """Point this process's Prefect client at `url` (call before importing prefect)."""
    if "prefect" in sys.modules:
        raise RuntimeError("use_prefect_api must run before prefect is imported")
    client_home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = str(client_home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


def prefect_env(url: str, client_home: Path) -> dict[str, str]:
    """Environment for a child process using the Prefect API at `url`."""
    client_home.mkdir(parents=True, exist_ok=True)
    return {"PREFECT_API_URL": url, "PREFECT_HOME": str(client_home)}


# --- estates and payloads -------------------------------------------------------------------


def write_bench_estate(
    directory: Path, hosts: int = 25, base_address: str = "127.0.50.1", budget: int = 1000
) -> tuple[Path, str]:
    """Write the lab's estate (people, rules, service `app`) for `hosts` hosts that need not run.

    Returns (estate dir, the `alertmanager` person's token). Used where no SSH happens.
    """
    from opsflow.lab.hosts.estate import write_estate
    from opsflow.lab.hosts.plan import SSH_PORT, Plan, host_addresses, keygen
    from opsflow.lab.people import token_file

    directory.mkdir(parents=True, exist_ok=True)
    key = keygen(directory / "host_key", "bench")
    plans = [
        Plan(
            name=f"lab{i:02d}",
            address=address,
            groups=("lab", "web" if i % 2 else "db"),
            root=directory / "hosts" / f"lab{i:02d}",
        )
        for i, address in enumerate(host_addresses(hosts, base_address), 1)
    ]
    estate_dir = directory / "estate"
    write_estate(estate_dir, plans, {p.name: key for p in plans})
    set_budget(estate_dir, budget)
    assert SSH_PORT  # the estate's hosts use the lab's port; nothing connects here
    return estate_dir, token_file(directory, "alertmanager").read_text()


def strip_runbooks(estate_dir: Path) -> None:
    """Take the runbooks out of the estate's services, so triage starts no restoration."""
    import yaml

    path = estate_dir / "services.yaml"
    data = yaml.safe_load(path.read_text())
    for service in data["services"]:
        service.pop("runbooks", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def set_budget(estate_dir: Path, budget: int) -> None:
    """Raise the estate's remediation budget so repeated runs are not stopped by it."""
    import yaml

    path = estate_dir / "estate.yaml"
    settings = yaml.safe_load(path.read_text()) or {}
    settings["remediation_budget"] = budget
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


STORM_START = datetime(2026, 11, 26, tzinfo=UTC)


def alert(
    fingerprint: str,
    host: str,
    alertname: str = "ServiceDown",
    severity: str = "critical",
    status: str = "firing",
    starts_at: datetime = STORM_START,
    ends_at: datetime | None = None,
    service: str = "app",
) -> dict[str, Any]:
    """One alert as Alertmanager's webhook (format 4) carries it."""
    return {
        "status": status,
        "labels": {
            "alertname": alertname,
            "host": host,
            "instance": f"{host}:18080",
            "job": "app",
            "service": service,
            "severity": severity,
        },
        "annotations": {"summary": f"{service} on {host}: {alertname}"},
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": (
            ends_at.isoformat().replace("+00:00", "Z") if ends_at else "0001-01-01T00:00:00Z"
        ),
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    }


def webhook(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """An Alertmanager webhook body (format 4) around `alerts`."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "receiver": "opsflow",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": '{}:{alertname="bench"}',
        "truncatedAlerts": 0,
    }


def storm(distinct: int = 50, repeats: int = 200, resolved_every: int = 20) -> list[dict]:
    """A storm of `distinct` alerts x `repeats` firings, a realistic mix of classes.

    Of every 10 distinct alerts: 6 ServiceDown (exception, lab hosts: correlated, runbook),
    2 LogFilesystemFull (exception), 1 warning, 1 Watchdog (informational). Each repeat has
    its own startsAt (a new firing); every `resolved_every`-th repeat is the resolved
    notification of the previous firing, so incidents open, correlate and close the loop.
    """
    kinds = [("ServiceDown", "critical")] * 6 + [("LogFilesystemFull", "critical")] * 2
    kinds += [("HighLatency", "warning"), ("Watchdog", "none")]
    alerts = []
    for repeat in range(repeats):
        for index in range(distinct):
            name, severity = kinds[index % len(kinds)]
            host = f"lab{index % 25 + 1:02d}"
            fingerprint = f"{index:08x}{repeat // resolved_every:08x}"
            start = STORM_START + timedelta(minutes=repeat // resolved_every, seconds=repeat)
            if (repeat + 1) % resolved_every == 0:
                alerts.append(
                    alert(
                        fingerprint,
                        host,
                        name,
                        severity,
                        "resolved",
                        STORM_START + timedelta(minutes=repeat // resolved_every),
                        start,
                    )
                )
            else:
                alerts.append(alert(fingerprint, host, name, severity, "firing", start))
    return alerts


def desk_env(home: Path, estate_dir: Path, prefect_url: str | None) -> dict[str, str]:
    """Environment for a desk process with its own store under `home`."""
    env = {
        "OPSFLOW_HOME": str(home),
        "OPSFLOW_INVENTORY": str(estate_dir),
        "OPSFLOW_DATABASE_URL": f"sqlite:///{home}/opsflow.db",
    }
    if prefect_url:
        env.update(prefect_env(prefect_url, home / "prefect-client"))
    return env


@contextlib.contextmanager
def server(
    argv: list[str], env: dict[str, str], log: Path, health_url: str, timeout_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start an HTTP server process and wait for `health_url` to answer 200."""
    with process(argv, log, env) as proc:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited:\n{tail(log)}")
            return http_get(health_url, timeout=2.0)[0] == 200

        wait_until(up, timeout_s, " ".join(argv), interval=0.1)
        yield proc
