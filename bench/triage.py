"""Triage benchmark: a storm of 10,000 stored alerts, triaged by the real flow vs a direct call.

The storm (bench.common.storm): 50 distinct alerts x 200 firings, each with its own startsAt;
of every ten alerts six are ServiceDown and two LogFilesystemFull on lab hosts (exceptions:
incidents opened and correlated), one a warning and one informational; every 20th firing is
the resolved notification, so incidents also close the loop and reopen. The alerts go
through the desk's own conversion (`desk.intake.from_alertmanager`) into fresh SQLite stores.

- `direct` (the baseline, no Prefect): `itsm.triage.triage(store, estate, pending, now)` until
  nothing is pending;
- `flow`: the real `event-triage` flow (`event_triage()`, as a worker
  runs it) against a private Prefect server, until nothing is pending;
- `desk` (end to end): the storm posted to the real desk (`python -m opsflow.desk.server`, 100
  webhooks of 100 alerts from 4 threads), timed from the first POST until the last event is
  triaged by a worker (`python -m opsflow.runtime.worker`).

    .venv/bin/python -m bench.triage [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    add_run_options,
    desk_env,
    free_port,
    http_post_json,
    loadavg,
    prefect_server,
    run_directory,
    server,
    storm,
    strip_runbooks,
    use_prefect_api,
    wait_until,
    webhook,
    workers,
    write_bench_estate,
    write_result,
)

TARGET_EVENTS_S = 5_000
TARGET_STORM_S = 5.0


def fill_store(url: str, alerts: list[dict]) -> int:
    """Store the storm through the desk's conversion, 100 alerts per webhook."""
    from opsflow.desk.intake import AlertmanagerWebhook, from_alertmanager
    from opsflow.itsm.store.records import open_records

    store = open_records(url)
    stored = 0
    for start in range(0, len(alerts), 100):
        body = AlertmanagerWebhook.model_validate(webhook(alerts[start : start + 100]))
        stored += store.events.store(from_alertmanager(body), datetime.now(UTC))[0]
    store.db.dispose()
    return stored


def outcome(db: Path) -> dict[str, Any]:
    """What triage left in the store: events triaged, incidents by state."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        pending = conn.execute("SELECT count(*) FROM events WHERE triaged_at IS NULL").fetchone()
        states = dict(conn.execute("SELECT state, count(*) FROM incidents GROUP BY state"))
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return {"events": events, "pending": pending[0], "incidents": states}


def run_direct(db: Path, estate_dir: Path) -> dict[str, Any]:
    """Baseline: the triage logic called directly until nothing is pending."""
    from opsflow.inventory.loader import load_estate
    from opsflow.itsm.store.records import open_records
    from opsflow.itsm.triage import triage

    store = open_records(f"sqlite:///{db}")
    estate = load_estate(estate_dir)
    actions: Counter[str] = Counter()
    batches = 0
    started = time.perf_counter()
    while events := store.events.pending(20_000):
        decisions = triage(store, estate, events, datetime.now(UTC))
        actions.update(d.action for d in decisions)
        batches += 1
    elapsed = time.perf_counter() - started
    store.db.dispose()
    return {"seconds": elapsed, "batches": batches, "actions": dict(actions)}


def run_flow(db: Path, estate_dir: Path) -> dict[str, Any]:
    """The real event-triage flow, run until it finds nothing pending."""
    os.environ["OPSFLOW_DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["OPSFLOW_INVENTORY"] = str(estate_dir)
    from opsflow.flows.event_triage import event_triage

    actions: Counter[str] = Counter()
    runs = []
    started = time.perf_counter()
    while True:
        run_started = time.perf_counter()
        counts = event_triage()
        runs.append(time.perf_counter() - run_started)
        if not counts:
            break
        for way in counts:
            actions[way["action"]] += way["events"]
        last_productive = time.perf_counter()
    elapsed = last_productive - started
    return {
        "seconds": elapsed,
        "runs_with_events": len(runs) - 1,
        "run_seconds": [round(r, 3) for r in runs],
        "empty_run_seconds": round(runs[-1], 3),
        "actions": dict(actions),
    }


def run_desk(
    root: Path, estate_dir: Path, token: str, prefect_url: str, alerts: list, timeout_s: float
) -> dict:
    """The storm posted to the real desk; time until its worker has triaged every event."""
    home = root / "desk-home"
    home.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = desk_env(home, estate_dir, prefect_url)
    db = home / "opsflow.db"
    bodies = [webhook(alerts[i : i + 100]) for i in range(0, len(alerts), 100)]
    headers = {"Authorization": f"Bearer {token}"}
    argv = [PYTHON, "-m", "opsflow.desk.server", "--port", str(port)]
    with (
        server(argv, env, home / "desk.log", base + "/api/v1/health"),
        workers(1, env, home),
    ):
        url = base + "/api/v1/events/alertmanager"
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda b: http_post_json(url, b, headers), bodies))
        posted = time.perf_counter() - started

        def all_triaged() -> bool:
            try:
                result = outcome(db)
            except sqlite3.Error:
                return False
            return result["events"] == len(alerts) and result["pending"] == 0

        timed_out = False
        try:
            wait_until(all_triaged, timeout_s, "the desk to triage the storm", interval=0.02)
        except RuntimeError:
            timed_out = True
        elapsed = time.perf_counter() - started
        result = outcome(db)
    return {
        "seconds": elapsed,
        "post_seconds": posted,
        "timed_out": timed_out,
        "statuses": dict(Counter(status for status, _ in answers)),
        "outcome": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2, help="storms per way (alternated)")
    parser.add_argument("--ways", default="direct,flow,desk", help="comma-separated subset")
    parser.add_argument("--desk-timeout", type=float, default=120.0)
    add_run_options(parser)
    args = parser.parse_args()

    alerts = storm()
    runs: dict[str, list[dict]] = {"direct": [], "flow": [], "desk": []}
    with run_directory("triage", args) as (root, load_before):
        estate_dir, token = write_bench_estate(root / "lab")
        strip_runbooks(estate_dir)  # no restorations: this measures triage alone
        with prefect_server(root) as prefect_url:
            use_prefect_api(prefect_url, root / "prefect-client")
            for repeat in range(args.repeats):
                for way in [w for w in ("direct", "flow") if w in args.ways.split(",")]:
                    db = root / f"{way}-{repeat}.db"
                    stored = fill_store(f"sqlite:///{db}", alerts)
                    result = (run_direct if way == "direct" else run_flow)(db, estate_dir)
                    result.update(stored=stored, outcome=outcome(db))
                    result["events_per_s"] = stored / result["seconds"]
                    runs[way].append(result)
                    print(
                        f"[{way} #{repeat + 1}] {stored} events in {result['seconds']:.2f} s = "
                        f"{result['events_per_s']:,.0f}/s; {result['actions']}; "
                        f"incidents {result['outcome']['incidents']}"
                    )
            if "desk" in args.ways.split(","):
                result = run_desk(root, estate_dir, token, prefect_url, alerts, args.desk_timeout)
                result["events_per_s"] = len(alerts) / result["seconds"]
                runs["desk"].append(result)
                print(
                    f"[desk] {len(alerts)} alerts posted in {result['post_seconds']:.2f} s, "
                    + ("NOT all triaged (timed out) " if result["timed_out"] else "all triaged ")
                    + f"{result['seconds']:.2f} s after the first POST = "
                    f"{result['events_per_s']:,.0f}/s; {result['outcome']}"
                )

    def best(way: str) -> float:
        return min((r["seconds"] for r in runs[way]), default=float("nan"))

    summary = {
        "storm_events": len(alerts),
        "direct_s": round(best("direct"), 3),
        "flow_s": round(best("flow"), 3),
        "direct_events_per_s": round(len(alerts) / best("direct"), 1),
        "flow_events_per_s": round(len(alerts) / best("flow"), 1),
        "flow_vs_direct_time_ratio": round(best("flow") / best("direct"), 3),
    }
    if runs["desk"]:
        summary["desk_storm_s"] = round(runs["desk"][0]["seconds"], 3)
        summary["desk_events_per_s"] = round(runs["desk"][0]["events_per_s"])
    print(f"\nsummary (best of {args.repeats}): {summary}")
    line = (
        f"storm of {len(alerts)}: flow {summary['flow_s']} s ({summary['flow_events_per_s']:,}/s), "
        f"direct {summary['direct_s']} s ({summary['direct_events_per_s']:,}/s), "
        f"ratio {summary['flow_vs_direct_time_ratio']}"
        + (
            f"; via the desk {summary['desk_storm_s']} s ({summary['desk_events_per_s']:,}/s)"
            if runs["desk"]
            else ""
        )
    )
    write_result(
        "triage",
        {
            "targets": {"events_per_s": TARGET_EVENTS_S, "storm_s": TARGET_STORM_S},
            "load_before": load_before,
            "load_after": loadavg(),
            "summary": summary,
            "met": summary["flow_events_per_s"] >= TARGET_EVENTS_S
            and summary["flow_s"] < TARGET_STORM_S,
            "runs": runs,
        },
        line,
    )


if __name__ == "__main__":
    main()
