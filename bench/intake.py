"""Intake benchmark: Alertmanager webhooks into the real desk vs a naive FastAPI + SQLite baseline.

Servers, each started as its own processes on a fresh store:
- `baseline`: bench/baseline_intake.py, FastAPI + pydantic + SQLite (WAL) + executemany, one
  process, uvicorn as installed (with uvicorn[standard]: uvloop and httptools);
- `desk`: `python -m opsflow.desk.server` as the product runs it: its default process count
  (`desk.server.DEFAULT_PROCESSES`), records and the private Prefect server started here on
  PostgreSQL, and an opsflow worker triaging beside it as `opsflow up` runs one
  (`--triage-command`);
- `desk-front`: the same processes serving the desk's app without its dispatcher
  (bench/desk_intake_only.py) beside one triage process (bench/triage_loop.py, the flow in a
  loop): the desk as an HTTP front with triage elsewhere, where triage is moving;
- `desk-intake-only`: the front without triage, to tell the intake's cost from triage's.
A desk target named with `@sqlite` (`desk@sqlite`) keeps its records in SQLite instead.
`groupcommit` is a sketch of an async group-commit intake (bench/groupcommit_intake.py).

PostgreSQL is a throwaway cluster (tests/support/postgres.py), a new database per server start, with
`fsync` off like SQLite's synchronous=NORMAL (a commit survives the process, not the machine)
and `synchronous_commit` on (a commit is in the WAL when it returns): 202 still means stored.

Load comes from other processes: wrk (closed loop, a Lua script giving every alert a new
fingerprint) and bench/openloop.py (open loop, fixed rate).
(a) webhooks of 100 alerts: alerts durably stored per second (rows counted in the database
    after the run) and p99 acknowledgement at a fixed number of connections;
(b) single-alert webhooks: most requests/s (wrk), then p99 acknowledgement at half of that
    load, and for the desk targets also at 1,500/s (half the former 3,000/s target).
Server CPU per alert counts every process of the server, its triage process and, on
PostgreSQL, the database server's processes.

    .venv/bin/python -m bench.intake [--duration 10] [--targets baseline,desk,desk-front]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO,
    add_run_options,
    desk_env,
    free_port,
    http_get,
    loadavg,
    prefect_server,
    process,
    run_directory,
    server,
    strip_runbooks,
    write_bench_estate,
    write_result,
)
from bench.openloop import run_open_loop

PATH = "/api/v1/events/alertmanager"
TARGET_BATCH_ALERTS_S = 25_000
TARGET_P99_AT_HALF_LOAD_S = 0.100
TARGET_RATIO = 1.0
DESK_KINDS = ("desk", "desk-front", "desk-intake-only")
TRIAGE_LOOP = "-m bench.triage_loop"
WORKER = "-m opsflow.runtime.worker"


def wrk(url: str, token: str, batch: int, connections: int, duration: float, run_id: int) -> dict:
    """One wrk run with the alert script; its WRKJSON summary (latencies in seconds)."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(REPO / "bench" / "wrk_alerts.lua"),
        url,
        "--",
        str(batch),
        token,
        str(run_id),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON ") :])
    seconds = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "batch": batch,
        "duration_s": round(seconds, 3),
        "requests": raw["requests"],
        "requests_per_s": raw["requests"] / seconds,
        "errors": {k[7:]: v for k, v in raw.items() if k.startswith("errors_") and v},
        "ack_s": {
            "mean": raw["lat_mean_us"] / 1e6,
            "p50": raw["lat_p50_us"] / 1e6,
            "p90": raw["lat_p90_us"] / 1e6,
            "p99": raw["lat_p99_us"] / 1e6,
            "max": raw["lat_max_us"] / 1e6,
        },
    }


def _stat(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(group: int | None = None, parent: int | None = None) -> float:
    """CPU time (user + system, reaped children included) of the processes in process group
    `group`, or of process `parent` and its children."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(pid)
        if fields is None:
            continue
        ppid, pgrp = int(fields[1]), int(fields[2])
        if (group is not None and pgrp == group) or (
            parent is not None and (int(pid) == parent or ppid == parent)
        ):
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def serving_processes(parent: int) -> list[int]:
    """The processes uvicorn started to serve a port (its `workers`), by their parent."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(pid)
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if fields is not None and int(fields[1]) == parent and b"spawn_main" in command:
            found.append(int(pid))
    return sorted(found)


def wait_until_each_serves(parent: int, health_url: str, timeout_s: float = 120.0) -> None:
    """Wait until every serving process of `parent` answers, not just the first one up.

    wrk keeps the connections it opens first: a process still starting then would get none
    for the whole run. Each process is asked alone, the others stopped (SIGSTOP) for at most
    2 s at a time: uvicorn replaces a process that does not answer its pings for 5 s.
    """
    deadline = time.monotonic() + timeout_s
    for pid in serving_processes(parent):
        while True:
            others = [other for other in serving_processes(parent) if other != pid]
            for other in others:
                os.kill(other, signal.SIGSTOP)
            try:
                status, _ = http_get(health_url, timeout=2.0)
            finally:
                for other in others:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGCONT)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"desk process {pid} did not answer {health_url}")
            time.sleep(0.5)


class Records:
    """Where one server's records live: a new SQLite file or a new PostgreSQL database."""

    def __init__(self, backend: str, home: Path, cluster: Any, name: str):
        self.backend = backend
        if backend == "sqlite":
            self.path = home / "records.db"
            self.url = f"sqlite:///{self.path}"
        else:
            database = re.sub(r"\W", "_", name)
            cluster.create_database(database)
            self.database = database
            self.url = cluster.url(database)
        self.cluster = cluster

    def count(self, where: str = "") -> int:
        """Rows of the events table (committed ones), optionally filtered."""
        query = f"SELECT count(*) FROM events {where}"  # noqa: S608 (constant clauses)
        if self.backend == "sqlite":
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30) as conn:
                return conn.execute(query).fetchone()[0]
        with self.cluster.cluster.connect(self.database) as conn:
            row = conn.execute(query).fetchone()
            return row[0] if row else 0

    def server_cpu(self) -> float:
        """CPU time of the database server's processes so far (0 for SQLite: in-process)."""
        if self.backend == "sqlite":
            return 0.0
        postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        return cpu_seconds(parent=postmaster)


class Target:
    """One server under test: how to start it on a fresh store, where its rows land.

    Args:
        spec: `baseline`, `groupcommit`, or a desk kind with an optional `@sqlite`.
        processes: desk processes serving the port (None: the desk's default).
        triage_command: for `desk`, a triage process to start beside it (after the
            interpreter, e.g. "-m bench.triage_loop"); "" for none.
    """

    def __init__(
        self,
        spec: str,
        root: Path,
        estate_dir: Path,
        token: str,
        prefect_url: str,
        cluster: Any,
        processes: int | None,
        triage_command: str,
    ):
        self.name = spec
        self.kind, _, backend = spec.partition("@")
        self.backend = backend or ("postgresql" if self.kind in DESK_KINDS else "sqlite")
        if self.kind not in (*DESK_KINDS, "baseline", "groupcommit"):
            raise ValueError(f"unknown target {spec!r}")
        self.root = root
        self.estate_dir = estate_dir
        self.token = token
        self.prefect_url = prefect_url
        self.cluster = cluster
        self.processes = processes
        self.triage = {"desk": triage_command, "desk-front": TRIAGE_LOOP}.get(self.kind, "")
        self.runs = 0

    @contextlib.contextmanager
    def start(self) -> Iterator[tuple[str, Records, Any]]:
        """Start the server on a fresh store; yields (url, records, cpu-seconds callable)."""
        self.runs += 1
        home = self.root / f"{self.name.replace('@', '-')}-{self.runs}"
        home.mkdir(parents=True)
        records = Records(self.backend, home, self.cluster, f"{self.name}_{self.runs}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if self.kind in ("baseline", "groupcommit"):
            argv = [PYTHON, "-m", f"bench.{self.kind}_intake", "--port", str(port)]
            argv += ["--db", str(records.path), "--token", self.token]
            env: dict[str, str] = {}
            health = base + "/health"
        else:
            module = "desk.server" if self.kind == "desk" else "bench.desk_intake_only"
            argv = [PYTHON, "-m", module, "--port", str(port)]
            if self.processes:
                argv += ["--processes", str(self.processes)]
            env = desk_env(home, self.estate_dir, self.prefect_url)
            env["OPSFLOW_DATABASE_URL"] = records.url
            health = base + "/api/v1/health"
        with contextlib.ExitStack() as stack:
            proc = stack.enter_context(server(argv, env, home / "server.log", health))
            wait_until_each_serves(proc.pid, health)
            groups = [proc.pid]
            if self.triage:
                triage_argv = [PYTHON, *shlex.split(self.triage)]
                triage = stack.enter_context(process(triage_argv, home / "triage.log", env))
                groups.append(triage.pid)

            def cpu() -> dict[str, float]:
                return {
                    "server": sum(cpu_seconds(group=g) for g in groups[:1]),
                    "triage": sum(cpu_seconds(group=g) for g in groups[1:]),
                    "database": records.server_cpu(),
                }

            yield base + PATH, records, cpu


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: round(after[key] - before[key], 2) for key in before}


def closed_loop_phase(
    target: Target, batch: int, duration: float, connections: int, run_id: int
) -> dict:
    """wrk at `connections` with webhooks of `batch` alerts; stored, triaged, CPU per alert."""
    with target.start() as (url, records, cpu):
        wrk(url, target.token, batch, connections, 2, run_id)  # warm up
        before_rows = records.count()
        before_cpu = cpu()
        result = wrk(url, target.token, batch, connections, duration, run_id + 1)
        spent = _cpu_delta(before_cpu, cpu())
        stored = records.count() - before_rows
        triaged = (
            records.count("WHERE triaged_at IS NOT NULL")
            if target.kind in ("desk", "desk-front")
            else None
        )
    result["alerts_stored"] = stored
    result["alerts_stored_per_s"] = stored / result["duration_s"]
    result["cpu_s"] = spent
    total = spent["server"] + spent["database"]
    result["server_cpu_us_per_alert"] = round(1e6 * total / max(stored, 1), 1)
    result["server_cpu_us_per_request"] = round(1e6 * total / max(result["requests"], 1), 1)
    if triaged is not None:
        result["alerts_triaged_by_end"] = triaged
    return result


def open_loop_phase(target: Target, rate: float, duration: float, run_id: int) -> dict:
    """Single-alert webhooks, open loop at `rate`/s on a fresh store."""
    with target.start() as (url, _records, _cpu):
        wrk(url, target.token, 1, 4, 1, run_id)  # warm up
        return run_open_loop(url, target.token, rate, duration=duration, run_id=run_id + 1)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@contextlib.contextmanager
def postgres_cluster(needed: bool) -> Iterator[Any]:
    """A throwaway PostgreSQL cluster whose commits are in the WAL when they return."""
    if not needed:
        yield None
        return
    from tests.support.postgres import start_cluster

    cluster = start_cluster()
    try:
        with cluster.cluster.connect(autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
        yield cluster
    finally:
        cluster.stop()


def prefect_database(cluster: Any) -> str | None:
    """The Prefect server's database on `cluster` (as production runs it), else None: SQLite."""
    if cluster is None:
        return None
    cluster.create_database("prefect")
    return cluster.url("prefect", "asyncpg")


def summarize_target(res: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """The figures of one target, with its ratios to the baseline's."""
    batch = max(res["batch_runs"], key=lambda r: r["alerts_stored_per_s"])
    top = max(res["max_runs"], key=lambda r: r["requests_per_s"])
    row: dict[str, Any] = {
        "batch_alerts_per_s": round(batch["alerts_stored_per_s"]),
        "batch_p99_ack_ms": round(batch["ack_s"]["p99"] * 1000, 1),
        "single_max_rps": round(top["requests_per_s"]),
        "single_max_p99_ms": round(top["ack_s"]["p99"] * 1000, 1),
        "batch_cpu_us_per_alert": min(r["server_cpu_us_per_alert"] for r in res["batch_runs"]),
        "single_cpu_us_per_request": min(r["server_cpu_us_per_request"] for r in res["max_runs"]),
        "single_half_load_p99_ms": round(res["open_loop"][0]["latency_s"]["p99"] * 1000, 1),
    }
    if "alerts_triaged_by_end" in batch:
        row["batch_triaged_by_end"] = batch["alerts_triaged_by_end"]
        row["batch_stored"] = batch["alerts_stored"]
    if len(res["open_loop"]) > 1:
        row["single_1500_p99_ms"] = round(res["open_loop"][1]["latency_s"]["p99"] * 1000, 1)
    if base is not None:
        row["batch_ratio_vs_baseline"] = round(
            row["batch_alerts_per_s"] / base["batch_alerts_per_s"], 3
        )
        row["single_ratio_vs_baseline"] = round(row["single_max_rps"] / base["single_max_rps"], 3)
        row["cpu_per_alert_ratio_vs_baseline"] = round(
            row["batch_cpu_us_per_alert"] / base["batch_cpu_us_per_alert"], 2
        )
        row["cpu_per_request_ratio_vs_baseline"] = round(
            row["single_cpu_us_per_request"] / base["single_cpu_us_per_request"], 2
        )
    return row


def met(row: dict[str, Any]) -> dict[str, bool]:
    """Which of DESIGN's intake targets a desk target met in this run."""
    return {
        "batch_ratio": row.get("batch_ratio_vs_baseline", 0) >= TARGET_RATIO,
        "single_ratio": row.get("single_ratio_vs_baseline", 0) >= TARGET_RATIO,
        "batch_25k": row["batch_alerts_per_s"] >= TARGET_BATCH_ALERTS_S,
        "p99_at_half_load": row["single_half_load_p99_ms"] < TARGET_P99_AT_HALF_LOAD_S * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--single-connections", type=int, default=16)
    parser.add_argument(
        "--targets",
        default="baseline,desk,desk-front,desk@sqlite",
        help="comma-separated: baseline, groupcommit, desk, desk-front, desk-intake-only, "
        "each desk kind also with @sqlite",
    )
    parser.add_argument(
        "--processes", type=int, default=None, help="desk processes (default: the desk's own)"
    )
    parser.add_argument(
        "--triage-command",
        default=WORKER,
        help="for `desk`: the process that triages beside it, after the interpreter "
        "(default: an opsflow worker); '' for none: events then wait for triage",
    )
    parser.add_argument("--rounds", type=int, default=2, help="closed-loop rounds; best kept")
    add_run_options(parser)
    args = parser.parse_args()

    from opsflow.desk.server import DEFAULT_PROCESSES

    names = args.targets.split(",")
    results: dict[str, Any] = {
        n: {"batch_runs": [], "max_runs": [], "open_loop": []} for n in names
    }
    needs_postgres = any(n.partition("@")[0] in DESK_KINDS and "@" not in n for n in names)
    with run_directory("intake", args) as (root, load_before):
        estate_dir, token = write_bench_estate(root / "lab")
        strip_runbooks(estate_dir)  # intake and triage are measured, not restorations
        with (
            postgres_cluster(needs_postgres) as cluster,
            prefect_server(root, database_url=prefect_database(cluster)) as prefect_url,
        ):
            targets = {
                n: Target(
                    n,
                    root,
                    estate_dir,
                    token,
                    prefect_url,
                    cluster,
                    args.processes,
                    args.triage_command,
                )
                for n in names
            }
            run_id = 0
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    run_id += 100
                    batch = closed_loop_phase(
                        targets[name], 100, args.duration, args.batch_connections, run_id
                    )
                    results[name]["batch_runs"].append(batch)
                    triaged = batch.get("alerts_triaged_by_end")
                    print(
                        f"[round {round_ + 1} {name}] webhooks of 100 alerts, "
                        f"{args.batch_connections} connections: "
                        f"{batch['alerts_stored_per_s']:,.0f} alerts/s stored, "
                        f"p50 {ms(batch['ack_s']['p50'])}, p99 {ms(batch['ack_s']['p99'])}, "
                        f"CPU {batch['server_cpu_us_per_alert']:.0f} us/alert {batch['cpu_s']}, "
                        + (f"triaged by the end {triaged:,}, " if triaged is not None else "")
                        + f"errors {batch['errors'] or 0}",
                        flush=True,
                    )
                for name in order:
                    run_id += 100
                    top = closed_loop_phase(
                        targets[name], 1, args.duration, args.single_connections, run_id
                    )
                    results[name]["max_runs"].append(top)
                    print(
                        f"[round {round_ + 1} {name}] single-alert webhooks, "
                        f"{args.single_connections} connections: "
                        f"{top['requests_per_s']:,.0f} req/s (p99 {ms(top['ack_s']['p99'])}, "
                        f"CPU {top['server_cpu_us_per_request']:.0f} us/request {top['cpu_s']}, "
                        f"errors {top['errors'] or 0})",
                        flush=True,
                    )
            for name in names:
                res = results[name]
                best = max(res["max_runs"], key=lambda r: r["requests_per_s"])
                rates = [round(best["requests_per_s"] / 2)]
                if targets[name].kind in DESK_KINDS:
                    rates.append(1500)
                for index, rate in enumerate(rates):
                    run_id += 100
                    loop = open_loop_phase(targets[name], rate, args.duration, run_id)
                    loop["label"] = "half of max" if index == 0 else f"{rate:g}/s"
                    res["open_loop"].append(loop)
                    print(
                        f"[{name}] open loop {loop['offered_rate']:,.0f}/s ({loop['label']}): "
                        f"achieved {loop['achieved_rate']:,.0f}/s, "
                        f"p50 {ms(loop['latency_s']['p50'])}, p99 {ms(loop['latency_s']['p99'])}, "
                        f"statuses {loop['statuses']}, errors {loop['errors']}",
                        flush=True,
                    )

    summary: dict[str, Any] = {}
    if "baseline" in results:
        summary["baseline"] = summarize_target(results["baseline"], None)
    for name in names:
        if name != "baseline":
            summary[name] = summarize_target(results[name], summary.get("baseline"))
    print("\nsummary:")
    for name, row in summary.items():
        print(f"  {name}: {row}")
    processes = args.processes or DEFAULT_PROCESSES
    parts = []
    for name, row in summary.items():
        text = (
            f"{name}: {row['batch_alerts_per_s']:,} alerts/s (p99 {row['batch_p99_ack_ms']} ms) "
            f"/ {row['single_max_rps']:,} single req/s (p99 {row['single_half_load_p99_ms']} ms "
            "at half load)"
        )
        if "batch_ratio_vs_baseline" in row:
            text += (
                f", ratio {row['batch_ratio_vs_baseline']}/{row['single_ratio_vs_baseline']}, "
                f"CPU per alert/request {row['cpu_per_alert_ratio_vs_baseline']}x/"
                f"{row['cpu_per_request_ratio_vs_baseline']}x the baseline's"
            )
        parts.append(text)
    line = f"[{processes} desk processes] " + ", ".join(parts)
    write_result(
        "intake",
        {
            "targets": {
                "batch_alerts_per_s": TARGET_BATCH_ALERTS_S,
                "ratio_vs_baseline": TARGET_RATIO,
                "single_p99_at_half_load_s": TARGET_P99_AT_HALF_LOAD_S,
            },
            "desk_processes": processes,
            "triage_command": args.triage_command or "(none)",
            "load_before": load_before,
            "load_after": loadavg(),
            "summary": summary,
            "met": {
                name: met(row)
                for name, row in summary.items()
                if name.partition("@")[0] in ("desk", "desk-front")
            },
            "results": results,
        },
        line,
    )


if __name__ == "__main__":
    main()
