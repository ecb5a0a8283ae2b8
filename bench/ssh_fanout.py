"""SSH fan-out benchmark: `uname -a` on 200 lab hosts, opsflow vs a plain paramiko thread pool.

A lab of 200 real sshd hosts (127.0.50.1-200) and a private Prefect server (for the
`opsflow-lab` SSH credentials block and the flow runs). Each round, in rotating order,
new connections every time (opsflow's connection pool is emptied before each way, and each
way starts once the hosts' sshd have ended the sessions of the last one):

- `paramiko` (the baseline): ThreadPoolExecutor(50), each job SSHClient.connect with the
  lab key and the host's pinned key, exec `uname -a`, read, close;
- `execute`: opsflow's `tasks.ssh.execute` in the same ThreadPoolExecutor(50);
- `flow`: a flow calling `tasks.fanout.map_hosts(run_command, hosts, limit=50, argv=...)`
  (one task run for the fan-out, a table artifact), timed from the call to its return
  (flow run creation included), and inside the flow (the fan-out alone). Run as the desk
  runs its flows, without Prefect's flow heartbeat: its thread sleeps in 1 s steps and is
  joined when a sync flow returns, which adds 0-1 s to the call (after the run is already
  Completed in Prefect, so not to the run's recorded duration);
- `flow_heartbeat`: the same flow with Prefect's default settings, heartbeat included.

Plus `execute (warm)`: `execute` again right after an untimed `execute` opened the pool's
connections.
The figure is the median of 3 rounds per way; the ratio is against `paramiko`.

    .venv/bin/python -m bench.ssh_fanout [--hosts 200] [--rounds 3] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    add_run_options,
    loadavg,
    prefect_server,
    run_directory,
    use_prefect_api,
    write_result,
)

TARGET_RATIO = 1.2
BASE_ADDRESS = "127.0.50.1"


def plain_paramiko(hosts: list, key_file: Path, concurrency: int) -> list[str]:
    """The baseline: a thread pool of plain paramiko clients, one new connection per host."""
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))

    def one(host) -> str:
        client = paramiko.SSHClient()
        key_type, blob = host.host_key.split()[:2]
        client.get_host_keys().add(
            f"[{host.address}]:{host.port}",
            key_type,
            paramiko.PKey.from_type_string(key_type, base64.b64decode(blob)),
        )
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            pkey=key,
            timeout=30,
            banner_timeout=30,
            auth_timeout=30,
            allow_agent=False,
            look_for_keys=False,
        )
        try:
            _, stdout, _ = client.exec_command("uname -a", timeout=30)
            out = stdout.read().decode()
            stdout.channel.recv_exit_status()
            return out
        finally:
            client.close()

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, hosts))


def opsflow_execute(hosts: list, concurrency: int) -> list[str]:
    """opsflow's `execute` (pooled paramiko, pinned keys, typed results) in a thread pool."""
    from opsflow.tasks.ssh import execute

    with ThreadPoolExecutor(concurrency) as pool:
        return [r.stdout for r in pool.map(lambda h: execute(h, ["uname", "-a"]), hosts)]


def make_flow():
    """The flow under test: `map_hosts(run_command, …)` as routine jobs fan out."""
    from prefect import flow

    from opsflow.tasks.fanout import map_hosts, raise_failures
    from opsflow.tasks.ssh import run_command

    @flow(name="bench-ssh-fanout")
    def fanout(hosts: list, limit: int) -> dict[str, Any]:
        started = time.perf_counter()
        outcomes = map_hosts(run_command, hosts, limit=limit, argv=["uname", "-a"])
        inside = time.perf_counter() - started
        raise_failures("uname -a", outcomes)
        return {"inside_s": inside, "outputs": [o.result.stdout for o in outcomes]}

    return fanout


def settle(lab, timeout_s: float = 30.0) -> None:
    """Wait until no host's sshd has a session left, so no way pays for the last one's.

    Closing 200 connections leaves 200 sshd processes to exit and be reaped after the
    client has moved on; whichever way ran next paid for them (the flows, more often).
    """
    pids = [h.sshd_pid for h in lab.hosts if h.sshd_pid is not None]

    def sessions() -> int:
        count = 0
        for pid in pids:
            try:
                count += len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
            except OSError:
                continue
        return count

    deadline = time.monotonic() + timeout_s
    while sessions() and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    add_run_options(parser)
    args = parser.parse_args()

    ways = ["paramiko", "execute", "flow", "flow_heartbeat"]
    times: dict[str, list[float]] = {way: [] for way in [*ways, "flow_inside", "execute_warm"]}
    lab_seconds = None
    with run_directory("ssh", args) as (root, load_before), prefect_server(root) as prefect_url:
        use_prefect_api(prefect_url, root / "prefect-client")
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from opsflow.blocks.registration import register_block_types, save_ssh_credentials
        from opsflow.inventory.loader import load_estate
        from opsflow.lab.hosts.down import lab_down
        from opsflow.lab.hosts.up import lab_up
        from opsflow.tasks.ssh_connections import close_connections

        started = time.perf_counter()
        lab = lab_up(root / "lab", hosts=args.hosts, base_address=BASE_ADDRESS)
        lab_seconds = time.perf_counter() - started
        print(f"lab of {args.hosts} hosts up in {lab_seconds:.1f} s")
        try:
            register_block_types()
            save_ssh_credentials("opsflow-lab", lab.client_key)
            hosts = load_estate(lab.estate_dir).hosts
            fanout = make_flow()
            # Warm-up: imports, the credentials block cache, the flow's first run.
            opsflow_execute(hosts[:5], 5)
            fanout(hosts[:5], 5)
            plain_paramiko(hosts[:5], lab.client_key, 5)
            expected = {h.name for h in hosts}
            for round_ in range(args.rounds):
                shift = round_ % len(ways)
                for way in ways[shift:] + ways[:shift]:
                    close_connections()
                    settle(lab)
                    t0 = time.perf_counter()
                    if way == "paramiko":
                        outputs = plain_paramiko(hosts, lab.client_key, args.concurrency)
                    elif way == "execute":
                        outputs = opsflow_execute(hosts, args.concurrency)
                    elif way == "flow":
                        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                            result = fanout(hosts, args.concurrency)
                        outputs = result["outputs"]
                        times["flow_inside"].append(result["inside_s"])
                    else:
                        outputs = fanout(hosts, args.concurrency)["outputs"]
                    elapsed = time.perf_counter() - t0
                    names = {o.split()[1] for o in outputs}
                    assert names == expected, f"{way}: wrong hosts answered"
                    times[way].append(elapsed)
                    print(f"round {round_ + 1} {way}: {elapsed:.2f} s")
                close_connections()
                settle(lab)
                opsflow_execute(hosts, args.concurrency)  # opens the connections
                t0 = time.perf_counter()
                opsflow_execute(hosts, args.concurrency)
                times["execute_warm"].append(time.perf_counter() - t0)
                print(f"round {round_ + 1} execute (warm): {times['execute_warm'][-1]:.2f} s")
        finally:
            close_connections()
            lab_down(root / "lab")

    medians = {way: statistics.median(values) for way, values in times.items() if values}
    base = medians["paramiko"]
    summary = {
        "hosts": args.hosts,
        "concurrency": args.concurrency,
        **{f"{way}_s": round(v, 3) for way, v in medians.items()},
        **{f"{way}_ratio": round(v / base, 3) for way, v in medians.items() if way != "paramiko"},
    }
    print(f"\nsummary (median of {args.rounds}): {summary}")
    line = (
        f"uname -a on {args.hosts} hosts: paramiko {summary['paramiko_s']} s, opsflow execute "
        f"{summary['execute_s']} s ({summary['execute_ratio']}x), flow {summary['flow_s']} s "
        f"({summary['flow_ratio']}x; fan-out inside the flow {summary['flow_inside_s']} s = "
        f"{summary['flow_inside_ratio']}x; with Prefect's flow heartbeat "
        f"{summary['flow_heartbeat_s']} s = {summary['flow_heartbeat_ratio']}x), "
        f"warm execute {summary['execute_warm_s']} s"
    )
    write_result(
        "ssh_fanout",
        {
            "target_ratio": TARGET_RATIO,
            "load_before": load_before,
            "load_after": loadavg(),
            "lab_up_s": lab_seconds,
            "summary": summary,
            "met": summary["flow_ratio"] <= TARGET_RATIO,
            "times_s": times,
        },
        line,
    )


if __name__ == "__main__":
    main()
