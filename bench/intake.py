"""Intake benchmark: Alertmanager webhooks into the real desk vs a minimal FastAPI+SQLite baseline.

Servers, each on a fresh SQLite store, one uvicorn worker, started as their own process:
- `desk`: `python -m desk.server`, the real thing, its dispatcher triaging what arrives
  through the `event-triage` flow on a private Prefect server (started here);
- `desk-intake-only`: the same desk app without the dispatcher (bench/desk_intake_only.py),
  to tell the intake's own cost from the triage thread's in the same process;
- `baseline`: bench/baseline_intake.py, FastAPI + pydantic + SQLite (WAL) + executemany.

Load comes from other processes: wrk (closed loop, a Lua script giving every alert a new
fingerprint) and bench/openloop.py (open loop, fixed rate).
(a) webhooks of 100 alerts: alerts durably stored per second (rows counted in the database
    after the run) and p99 acknowledgement at a fixed number of connections;
(b) single-alert webhooks: most requests/s (wrk), then p99 acknowledgement at half of that
    load, and for the desk also at 1,500/s (half the DESIGN target of 3,000/s).

    .venv/bin/python -m bench.intake [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO,
    desk_env,
    free_port,
    loadavg,
    prefect_server,
    server,
    wait_for_quiet,
    write_bench_estate,
    write_result,
)
from bench.openloop import run_open_loop

PATH = "/api/v1/events/alertmanager"
TARGET_BATCH_ALERTS_S = 25_000
TARGET_BATCH_P99_S = 0.100
TARGET_SINGLE_RPS = 3_000
TARGET_SINGLE_P99_S = 0.050


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_rows(db: Path, where: str = "") -> int:
    """Rows in the events table, read through a separate connection (committed rows only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(f"SELECT count(*) FROM events {where}").fetchone()[0]  # noqa: S608


class Target:
    """One server under test: how to start it on a fresh store, where its rows land."""

    def __init__(self, name: str, root: Path, estate_dir: Path, token: str, prefect_url: str):
        self.name = name
        self.root = root
        self.estate_dir = estate_dir
        self.token = token
        self.prefect_url = prefect_url
        self.runs = 0

    def start(self):
        """Start the server on a fresh store; a context manager yielding (url, db path)."""
        self.runs += 1
        home = self.root / f"{self.name}-{self.runs}"
        home.mkdir(parents=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if self.name in ("baseline", "groupcommit"):
            db = home / "baseline.db"
            argv = [PYTHON, "-m", f"bench.{self.name}_intake", "--port", str(port)]
            argv += ["--db", str(db), "--token", self.token]
            env, health = {}, base + "/health"
        else:
            db = home / "opsflow.db"
            module = "desk.server" if self.name == "desk" else "bench.desk_intake_only"
            argv = [PYTHON, "-m", module, "--port", str(port)]
            env = desk_env(home, self.estate_dir, self.prefect_url)
            health = base + "/api/v1/health"
        target = self

        class _Running:
            def __enter__(self):
                self._cm = server(argv, env, home / "server.log", health)
                target.pid = self._cm.__enter__().pid
                return base + PATH, db

            def __exit__(self, *exc):
                target.last_log = home / "server.log"
                return self._cm.__exit__(*exc)

        return _Running()


def batch_phase(target: Target, duration: float, connections: int, run_id: int) -> dict:
    """(a) webhooks of 100 alerts, closed loop at `connections`."""
    with target.start() as (url, db):
        wrk(url, target.token, 100, connections, 2, run_id)  # warm up
        before = count_rows(db)
        cpu = cpu_seconds(target.pid)
        started = time.monotonic()
        result = wrk(url, target.token, 100, connections, duration, run_id + 1)
        cpu = cpu_seconds(target.pid) - cpu
        stored = count_rows(db) - before
        elapsed = time.monotonic() - started
        triaged = count_rows(db, "WHERE triaged_at IS NOT NULL") if target.name == "desk" else None
    result["alerts_stored"] = stored
    result["alerts_stored_per_s"] = stored / result["duration_s"]
    result["server_cpu_s"] = round(cpu, 2)
    result["server_cpu_us_per_alert"] = round(1e6 * cpu / max(stored, 1), 1)
    result["wall_s"] = round(elapsed, 3)
    if triaged is not None:
        result["alerts_triaged_by_end"] = triaged
    return result


def max_phase(target: Target, duration: float, connections: int, run_id: int) -> dict:
    """(b) single-alert webhooks, closed loop: the most requests/s."""
    with target.start() as (url, db):
        wrk(url, target.token, 1, connections, 2, run_id)  # warm up
        before = count_rows(db)
        cpu = cpu_seconds(target.pid)
        result = wrk(url, target.token, 1, connections, duration, run_id + 1)
        cpu = cpu_seconds(target.pid) - cpu
        result["alerts_stored"] = count_rows(db) - before
        result["server_cpu_s"] = round(cpu, 2)
        result["server_cpu_us_per_request"] = round(1e6 * cpu / max(result["requests"], 1), 1)
    return result


def open_loop_phase(target: Target, rate: float, duration: float, run_id: int) -> dict:
    """(b) single-alert webhooks, open loop at `rate`/s on a fresh store."""
    with target.start() as (url, _db):
        wrk(url, target.token, 1, 4, 1, run_id)  # warm up
        return run_open_loop(url, target.token, rate, duration=duration, run_id=run_id + 1)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--single-connections", type=int, default=16)
    parser.add_argument(
        "--targets",
        default="baseline,desk-intake-only,desk",
        help="comma-separated: baseline, desk-intake-only, desk, groupcommit (a sketch of "
        "an async group-commit intake, bench/groupcommit_intake.py)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="closed-loop rounds; best kept")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=2.0,
        help="first wait (up to 5 min) for the 1-min load average to fall under this; 0: don't",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="opsflow-bench-intake-"))
    load_before = wait_for_quiet(args.quiet_load) if args.quiet_load else loadavg()
    names = args.targets.split(",")
    results: dict[str, Any] = {
        n: {"batch_runs": [], "max_runs": [], "open_loop": []} for n in names
    }
    try:
        estate_dir, token = write_bench_estate(root / "lab")
        with prefect_server(root) as prefect_url:
            targets = {n: Target(n, root, estate_dir, token, prefect_url) for n in names}
            run_id = 0
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    run_id += 100
                    batch = batch_phase(
                        targets[name], args.duration, args.batch_connections, run_id
                    )
                    results[name]["batch_runs"].append(batch)
                    print(
                        f"[round {round_ + 1} {name}] webhooks of 100 alerts, "
                        f"{args.batch_connections} connections: "
                        f"{batch['alerts_stored_per_s']:,.0f} alerts/s stored, "
                        f"p50 {ms(batch['ack_s']['p50'])}, p99 {ms(batch['ack_s']['p99'])}, "
                        f"server CPU {batch['server_cpu_us_per_alert']:.0f} us/alert, "
                        f"errors {batch['errors'] or 0}"
                    )
                for name in order:
                    run_id += 100
                    top = max_phase(targets[name], args.duration, args.single_connections, run_id)
                    results[name]["max_runs"].append(top)
                    print(
                        f"[round {round_ + 1} {name}] single-alert webhooks, "
                        f"{args.single_connections} connections: "
                        f"{top['requests_per_s']:,.0f} req/s (p99 {ms(top['ack_s']['p99'])}, "
                        f"server CPU {top['server_cpu_us_per_request']:.0f} us/request, "
                        f"errors {top['errors'] or 0})"
                    )
            for name in names:
                res = results[name]
                res["batch_100"] = max(res["batch_runs"], key=lambda r: r["alerts_stored_per_s"])
                res["max"] = max(res["max_runs"], key=lambda r: r["requests_per_s"])
                rates = [round(res["max"]["requests_per_s"] / 2)]
                if name.startswith("desk"):
                    rates.append(TARGET_SINGLE_RPS / 2)
                for index, rate in enumerate(rates):
                    run_id += 100
                    loop = open_loop_phase(targets[name], rate, args.duration, run_id)
                    loop["label"] = "half of max" if index == 0 else f"{rate:g}/s"
                    res["open_loop"].append(loop)
                    print(
                        f"[{name}] open loop {loop['offered_rate']:,.0f}/s ({loop['label']}): "
                        f"achieved {loop['achieved_rate']:,.0f}/s, "
                        f"p50 {ms(loop['latency_s']['p50'])}, p99 {ms(loop['latency_s']['p99'])}, "
                        f"statuses {loop['statuses']}, errors {loop['errors']}"
                    )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    summary: dict[str, Any] = {}
    base = results.get("baseline")
    for name in sorted(results, key=lambda n: n != "baseline"):
        res = results[name]
        row = {
            "batch_alerts_per_s": round(res["batch_100"]["alerts_stored_per_s"]),
            "batch_p99_ack_ms": round(res["batch_100"]["ack_s"]["p99"] * 1000, 1),
            "single_max_rps": round(res["max"]["requests_per_s"]),
            "single_max_p99_ms": round(res["max"]["ack_s"]["p99"] * 1000, 1),
            "batch_cpu_us_per_alert": min(r["server_cpu_us_per_alert"] for r in res["batch_runs"]),
            "single_cpu_us_per_request": min(
                r["server_cpu_us_per_request"] for r in res["max_runs"]
            ),
            "single_half_load_p99_ms": round(res["open_loop"][0]["latency_s"]["p99"] * 1000, 1),
        }
        if len(res["open_loop"]) > 1:
            row["single_1500_p99_ms"] = round(res["open_loop"][1]["latency_s"]["p99"] * 1000, 1)
        if base and name != "baseline":
            row["batch_ratio_vs_baseline"] = round(
                res["batch_100"]["alerts_stored_per_s"] / base["batch_100"]["alerts_stored_per_s"],
                3,
            )
            row["single_ratio_vs_baseline"] = round(
                res["max"]["requests_per_s"] / base["max"]["requests_per_s"],
                3,
            )
            row["cpu_per_alert_ratio_vs_baseline"] = round(
                row["batch_cpu_us_per_alert"] / summary["baseline"]["batch_cpu_us_per_alert"], 2
            )
            row["cpu_per_request_ratio_vs_baseline"] = round(
                row["single_cpu_us_per_request"] / summary["baseline"]["single_cpu_us_per_request"],
                2,
            )
        summary[name] = row
    print("\nsummary:")
    for name, row in summary.items():
        print(f"  {name}: {row}")
    desk = summary.get("desk", {})
    line = ", ".join(
        f"{name}: {row['batch_alerts_per_s']:,} alerts/s (p99 {row['batch_p99_ack_ms']} ms) "
        f"/ {row['single_max_rps']:,} single req/s (p99 {row['single_half_load_p99_ms']} ms "
        "at half load)"
        + (
            f", ratio {row['batch_ratio_vs_baseline']}/{row['single_ratio_vs_baseline']}, "
            f"CPU per alert/request {row['cpu_per_alert_ratio_vs_baseline']}x/"
            f"{row['cpu_per_request_ratio_vs_baseline']}x the baseline's"
            if "batch_ratio_vs_baseline" in row
            else ""
        )
        for name, row in summary.items()
    )
    write_result(
        "intake",
        {
            "targets": {
                "batch_alerts_per_s": TARGET_BATCH_ALERTS_S,
                "batch_p99_ack_s": TARGET_BATCH_P99_S,
                "single_rps": TARGET_SINGLE_RPS,
                "single_p99_at_half_load_s": TARGET_SINGLE_P99_S,
            },
            "load_before": load_before,
            "load_after": loadavg(),
            "summary": summary,
            "met": {
                "batch": bool(desk)
                and desk["batch_alerts_per_s"] >= TARGET_BATCH_ALERTS_S
                and desk["batch_p99_ack_ms"] < TARGET_BATCH_P99_S * 1000,
                "single": bool(desk)
                and desk["single_max_rps"] >= TARGET_SINGLE_RPS
                and desk.get("single_1500_p99_ms", 1e9) < TARGET_SINGLE_P99_S * 1000,
            },
            "results": results,
        },
        line,
    )


if __name__ == "__main__":
    main()
