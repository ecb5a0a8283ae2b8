"""Restoration latency: webhook arrival → the runbook's first command on the host, and
service killed → incident Resolved through real Prometheus and Alertmanager.

Real parts: a lab of 5 sshd hosts (127.0.51.1-5), a throwaway PostgreSQL 15 cluster holding
the Prefect server's database and the records, the desk (`python -m opsflow.desk.server`, handing
triage to the workers), `--workers` opsflow workers (`python -m opsflow.runtime.worker`),
the `opsflow-lab` SSH credentials block, a local pager. The estate's remediation budget is
raised to 1000 so repeated runs are not stopped by the circuit breaker.

The first command is detected on the host itself: each host's `svc` (the service control
script every runbook step calls; `svc status` is the restart-service runbook's first
command) is wrapped by a script that appends `date +%s.%N` and its arguments to a log in
the host's private /var/lib/app before running the real one. Same machine, same clock.

(a) For each run, on the next host: stop the app directly (`run_on_host(svc stop)`, so no
    monitoring is involved), POST a firing ServiceDown webhook (Alertmanager format 4) to the
    desk, and measure from just before the POST to the wrapper's first `status` call after
    it; then wait for the incident to be Resolved (also reported: POST → Resolved).
(b) With Prometheus + Alertmanager watching the lab and posting to the desk: stop the app
    (`break_host(service)`), measure until the incident opened for it is Resolved (its
    `resolved_at`), and the first command after the kill.
(c) Baseline, same server: `run_deployment` of a served deployment whose flow runs the same
    first command over SSH (`bench.served_first_command`), timed the same way.

    .venv/bin/python -m bench.restore_latency [--runs 10] [--monitored-runs 5]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from bench.common import (
    PYTHON,
    add_run_options,
    alert,
    desk_env,
    free_port,
    http_get,
    http_post_json,
    loadavg,
    postgres,
    prefect_server,
    process,
    run_directory,
    server,
    set_budget,
    summarize,
    use_prefect_api,
    wait_until,
    webhook,
    workers,
    write_result,
)

BASE_ADDRESS = "127.0.51.1"
TARGET_P50_S = 0.5
TARGET_P99_S = 1.5
TARGET_RESOLVED_S = 3.0
CALLS = "/var/lib/app/svc-calls.log"
WRAPPER = f"""#!/bin/sh
# bench: record when svc runs (epoch seconds) and with what, then run the real svc.
echo "$(date +%s.%N) $*" >> {CALLS}
exec /var/lib/app/bin/svc.real "$@"
"""


def wrap_svc(lab) -> None:
    """Put the timestamping wrapper in front of every host's svc."""
    for host in lab.hosts:
        bin_dir = host.root / "var-lib-app" / "bin"
        if not (bin_dir / "svc.real").exists():
            (bin_dir / "svc").rename(bin_dir / "svc.real")
        (bin_dir / "svc").write_text(WRAPPER)
        (bin_dir / "svc").chmod(0o755)


def svc_calls(lab, host: str) -> list[tuple[float, str]]:
    """(epoch seconds, arguments) of every svc call on `host` so far."""
    path = lab.host(host).root / "var-lib-app" / CALLS.rsplit("/", 1)[1]
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    calls = []
    for line in lines:
        stamp, _, args = line.partition(" ")
        try:
            calls.append((float(stamp), args))
        except ValueError:
            continue
    return calls


def first_call_after(lab, host: str, after: float, args: str = "status") -> float | None:
    """When svc was first called with `args` on `host` after `after` (epoch s), if it was."""
    times = [t for t, a in svc_calls(lab, host) if a == args and t > after]
    return min(times) if times else None


class Desk:
    """The desk's API as the benchmark uses it."""

    def __init__(self, url: str, token: str, operator_token: str):
        self.url = url
        self.token = token
        self.operator = {"Authorization": f"Bearer {operator_token}"}

    def post_alert(self, body: dict) -> tuple[int, float]:
        t0 = time.perf_counter()
        status, _ = http_post_json(
            self.url + "/api/v1/events/alertmanager",
            body,
            {"Authorization": f"Bearer {self.token}"},
        )
        return status, time.perf_counter() - t0

    def incidents(self, host: str) -> list[dict]:
        query = urllib.parse.urlencode({"host": host, "limit": 20})
        status, body = http_get(f"{self.url}/api/v1/incidents?{query}", self.operator)
        return json.loads(body) if status == 200 else []

    def incident(self, number: str) -> dict:
        status, body = http_get(f"{self.url}/api/v1/incidents/{number}", self.operator)
        return json.loads(body) if status == 200 else {}


def parse_time(text: str | None) -> float | None:
    """An API timestamp as epoch seconds."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def new_incident(desk: Desk, host: str, known: set[int], state: str | None = None):
    """A service-down incident on `host` not in `known` (optionally in `state`), if any."""
    for incident in desk.incidents(host):
        if incident["id"] in known or incident["symptom"] != "service-down":
            continue
        if state is None or incident["state"] == state:
            return incident
    return None


def breakdown(
    records_url: str, incident: dict, posted_at: float, first: float, worklog_at: float | None
):
    """Where the time went: POST → triaged → restoration flow running → runbook → command.

    The event's `triaged_at` comes from the records database, the restoration flow
    run's start from the Prefect API, the runbook start from the incident's worklog.
    """
    from prefect.client.orchestration import get_client
    from sqlalchemy import create_engine, text

    engine = create_engine(records_url)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT min(triaged_at) FROM events WHERE incident_id = :id"),
            {"id": incident["id"]},
        ).one_or_none()
    engine.dispose()
    triaged = row[0].timestamp() if row and row[0] else None
    started = None
    with get_client(sync_client=True) as client:
        for run_id in incident.get("flow_run_ids", []):
            run = client.read_flow_run(run_id)
            if run.flow_id and run.start_time and run.name.startswith("restore-"):
                started = run.start_time.timestamp()
    marks = {"triaged": triaged, "restoration_running": started, "runbook_started": worklog_at}
    result, previous, last = {}, "post", posted_at
    for name, at in marks.items():
        if at is not None:
            result[f"{previous}_to_{name}_s"] = round(at - last, 3)
            previous, last = name, at
    result[f"{previous}_to_first_command_s"] = round(first - last, 3)
    return result


def wait_app_up(lab, host: str, timeout_s: float = 30.0) -> None:
    """Until the host's app answers /health again (the runbook restarted it)."""
    from opsflow.lab.hosts.probes import app_health

    record = lab.host(host)
    wait_until(
        lambda: app_health(record.address, record.app_port, timeout=1.0),
        timeout_s,
        f"the app on {host} to answer",
        interval=0.1,
    )


def direct_runs(lab, desk: Desk, runs: int, records_url: str) -> list[dict[str, Any]]:
    """(a) webhook → first command, the webhook posted by us."""
    from opsflow.lab.hosts.run import SVC, run_on_host

    results = []
    for run in range(runs):
        host = lab.hosts[run % len(lab.hosts)].name
        known = {i["id"] for i in desk.incidents(host)}
        stopped = run_on_host(host, [SVC, "stop"], lab.directory)
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(0.2)
        now = datetime.now(UTC)
        body = webhook(
            [
                alert(
                    f"{0xBE00 + run:016x}",
                    host,
                    "ServiceDown",
                    "critical",
                    starts_at=now,
                )
            ]
        )
        body["alerts"][0]["labels"]["symptom"] = "service-down"
        posted_at = time.time()
        status, ack = desk.post_alert(body)
        assert status == 202, status
        first = wait_until(
            lambda h=host, t=posted_at: first_call_after(lab, h, t),
            60,
            f"the runbook's first command on {host}",
            interval=0.01,
        )
        incident = wait_until(
            lambda h=host, k=known: new_incident(desk, h, k, "Resolved"),
            90,
            f"the incident on {host} to be Resolved",
            interval=0.05,
        )
        detail = desk.incident(incident["number"])
        started_line = next(
            (w for w in detail.get("worklog", []) if w["text"].startswith("runbook ")), None
        )
        result = {
            "host": host,
            "incident": incident["number"],
            "ack_s": ack,
            "first_command_s": first - posted_at,
            "worklog_runbook_started_s": (
                parse_time(started_line["at"]) - posted_at if started_line else None
            ),
            "resolved_s": parse_time(incident["resolved_at"]) - posted_at,
        }
        try:
            result["breakdown"] = breakdown(
                records_url,
                incident,
                posted_at,
                first,
                parse_time(started_line["at"]) if started_line else None,
            )
        except Exception as exc:  # a missing piece of the breakdown must not lose the run
            result["breakdown"] = {"error": repr(exc)}
        results.append(result)
        print(
            f"(a) run {run + 1} {host} {incident['number']}: ack {ack * 1000:.0f} ms, "
            f"first command +{result['first_command_s']:.3f} s, "
            f"resolved +{result['resolved_s']:.2f} s; {result['breakdown']}"
        )
        wait_app_up(lab, host)
        time.sleep(0.5)
    return results


def served_runs(lab, runs: int) -> list[float]:
    """Baseline: `run_deployment` of a served deployment → the same first command on the host."""
    from prefect.deployments import run_deployment

    from bench.served_first_command import DEPLOYMENT

    results = []
    for run in range(runs):
        host = lab.hosts[run % len(lab.hosts)].name
        triggered_at = time.time()
        run_deployment(DEPLOYMENT, parameters={"host": host}, timeout=0)
        first = wait_until(
            lambda h=host, t=triggered_at: first_call_after(lab, h, t),
            60,
            f"the served deployment's command on {host}",
            interval=0.01,
        )
        results.append(first - triggered_at)
        print(f"(baseline) run {run + 1} {host}: first command +{results[-1]:.3f} s")
        time.sleep(1.0)
    return results


def monitored_runs(lab, desk: Desk, runs: int) -> list[dict[str, Any]]:
    """(b) app stopped → incident Resolved, with Prometheus and Alertmanager detecting it."""
    from opsflow.lab.hosts.breakage import break_host

    results = []
    for run in range(runs):
        host = lab.hosts[run % len(lab.hosts)].name
        known = {i["id"] for i in desk.incidents(host)}
        killed_at = time.time()
        break_host(host, "service", lab.directory)
        incident = wait_until(
            lambda h=host, k=known: new_incident(desk, h, k, "Resolved"),
            90,
            f"the incident on {host} to be Resolved",
            interval=0.05,
        )
        detail = desk.incident(incident["number"])
        events_at = [parse_time(incident.get("opened_at"))]
        first = first_call_after(lab, host, killed_at)
        result = {
            "host": host,
            "incident": incident["number"],
            "resolved_s": parse_time(incident["resolved_at"]) - killed_at,
            "first_command_s": first - killed_at if first else None,
            "alert_starts_at_s": events_at[0] - killed_at if events_at[0] else None,
            "worklog": [w["text"][:80] for w in detail.get("worklog", [])],
        }
        results.append(result)
        print(
            f"(b) run {run + 1} {host} {incident['number']}: first command "
            f"+{result['first_command_s']:.2f} s, Resolved +{result['resolved_s']:.2f} s"
        )
        wait_app_up(lab, host)
        time.sleep(3.0)  # let Prometheus see it up and Alertmanager send the resolution
    return results


def deployment_exists() -> bool:
    """Whether the baseline's served deployment is registered yet."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from bench.served_first_command import DEPLOYMENT

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--monitored-runs", type=int, default=5)
    parser.add_argument(
        "--desk-command",
        default="-m opsflow.desk.server",
        help="how the desk is started (after the interpreter, before --port): to compare a "
        "candidate desk",
    )
    parser.add_argument("--workers", type=int, default=2, help="opsflow worker processes")
    add_run_options(parser)
    args = parser.parse_args()

    direct: list[dict] = []
    monitored: list[dict] = []
    served: list[float] = []
    with run_directory("restore", args) as (root, load_before):
        prefect_port = free_port()
        # Before the cluster's code imports prefect, which reads its settings once.
        use_prefect_api(f"http://127.0.0.1:{prefect_port}/api", root / "prefect-client")
        with (
            postgres("prefect", "records") as cluster,
            prefect_server(
                root, database_url=cluster.url("prefect", "asyncpg"), port=prefect_port
            ) as prefect_url,
        ):
            records_url = cluster.url("records")
            from opsflow.blocks.notifications import save_webhook_pager
            from opsflow.blocks.registration import register_block_types, save_ssh_credentials
            from opsflow.lab.hosts.down import lab_down
            from opsflow.lab.hosts.up import lab_up
            from opsflow.lab.monitoring import monitoring_down, monitoring_up, wait_until_scraped
            from opsflow.lab.pager import PagerServer
            from opsflow.lab.people import token_file

            lab = lab_up(root / "lab", hosts=5, base_address=BASE_ADDRESS)
            pager = PagerServer(("127.0.0.1", 0), root / "pages.log")
            threading.Thread(target=pager.serve_forever, daemon=True).start()
            try:
                set_budget(lab.estate_dir, 1000)
                wrap_svc(lab)
                register_block_types()
                save_ssh_credentials("opsflow-lab", lab.client_key)
                save_webhook_pager("ops-pager", pager.url)
                home = root / "desk-home"
                home.mkdir()
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                argv = [PYTHON, *args.desk_command.split(), "--port", str(port)]
                env = desk_env(home, lab.estate_dir, prefect_url)
                env["OPSFLOW_DATABASE_URL"] = records_url
                token = token_file(lab.directory, "alertmanager").read_text()
                with (
                    server(argv, env, root / "desk.log", url + "/api/v1/health"),
                    workers(args.workers, env, root),
                ):
                    desk = Desk(url, token, token_file(lab.directory, "alice").read_text())
                    if args.runs:
                        direct = direct_runs(lab, desk, args.runs, records_url)
                    if args.monitored_runs:
                        watch = monitoring_up(
                            lab,
                            webhook_url=f"{url}/api/v1/events/alertmanager",
                            webhook_token=token,
                            prometheus_port=free_port(),
                            alertmanager_port=free_port(),
                            exporter_port=free_port(),
                        )
                        try:
                            wait_until_scraped(watch, timeout_s=60)
                            monitored = monitored_runs(lab, desk, args.monitored_runs)
                        finally:
                            monitoring_down(watch.directory)
                if args.runs:
                    served_env = env | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}
                    with process(
                        [PYTHON, "-m", "bench.served_first_command"],
                        root / "served.log",
                        served_env,
                    ):
                        wait_until(deployment_exists, 60, "the served deployment", interval=0.25)
                        served = served_runs(lab, args.runs)
            finally:
                pager.shutdown()
                from opsflow.tasks.ssh_connections import close_connections

                close_connections()
                lab_down(root / "lab")

    first = summarize([r["first_command_s"] for r in direct])
    resolved_direct = summarize([r["resolved_s"] for r in direct])
    worklog = summarize(
        [r["worklog_runbook_started_s"] for r in direct if r["worklog_runbook_started_s"]]
    )
    resolved = summarize([r["resolved_s"] for r in monitored])
    monitored_first = summarize([r["first_command_s"] for r in monitored if r["first_command_s"]])
    baseline = summarize(served)
    summary = {
        "workers": args.workers,
        "runs": len(direct),
        "first_command_p50_s": round(first["p50"], 3),
        "first_command_p99_s": round(first["p99"], 3),
        "first_command_max_s": round(first["max"], 3),
        "worklog_started_p50_s": round(worklog["p50"], 3),
        "served_deployment_first_command_p50_s": round(baseline["p50"], 3),
        "served_deployment_first_command_p99_s": round(baseline["p99"], 3),
        "ratio_p50_opsflow_to_served": round(first["p50"] / baseline["p50"], 3),
        "post_to_resolved_p50_s": round(resolved_direct["p50"], 3),
        "monitored_runs": len(monitored),
        "killed_to_first_command_p50_s": round(monitored_first["p50"], 3),
        "killed_to_resolved_p50_s": round(resolved["p50"], 3),
        "killed_to_resolved_max_s": round(resolved["max"], 3),
    }
    steps: dict[str, list[float]] = {}
    for run in direct:
        for step, value in run.get("breakdown", {}).items():
            if isinstance(value, float | int):
                steps.setdefault(step, []).append(value)
    summary["first_command_breakdown_p50_s"] = {
        step: round(summarize(values)["p50"], 3) for step, values in steps.items()
    }
    print(f"\nsummary: {summary}")
    candidate = (
        "" if args.desk_command == "-m opsflow.desk.server" else f"[desk: {args.desk_command}] "
    )
    line = candidate + (
        f"webhook → first command p50 {summary['first_command_p50_s']} s, "
        f"p99 {summary['first_command_p99_s']} s ({len(direct)} runs; POST → Resolved p50 "
        f"{summary['post_to_resolved_p50_s']} s); killed → Resolved p50 "
        f"{summary['killed_to_resolved_p50_s']} s, max {summary['killed_to_resolved_max_s']} s "
        f"({len(monitored)} runs, Prometheus + Alertmanager); {args.workers} workers on "
        f"PostgreSQL; served deployment first command p50 "
        f"{summary['served_deployment_first_command_p50_s']} s (opsflow/served "
        f"{summary['ratio_p50_opsflow_to_served']})"
    )
    write_result(
        "restore_latency" if not candidate else "restore_latency_candidate",
        {
            "targets": {
                "first_command_p50_s": TARGET_P50_S,
                "first_command_p99_s": TARGET_P99_S,
                "killed_to_resolved_s": TARGET_RESOLVED_S,
            },
            "desk_command": args.desk_command,
            "load_before": load_before,
            "load_after": loadavg(),
            "summary": summary,
            "met": {
                "first_command": first["p50"] < TARGET_P50_S and first["p99"] < TARGET_P99_S,
                "killed_to_resolved": resolved["p50"] < TARGET_RESOLVED_S,
            },
            "direct": direct,
            "monitored": monitored,
        },
        line,
        module="restore_latency",
    )


if __name__ == "__main__":
    main()
