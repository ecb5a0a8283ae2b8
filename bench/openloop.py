"""An open-loop HTTP load generator: single-alert webhooks at a fixed rate, latency from schedule.

Requests leave on a fixed timetable whatever the answers do (open loop, as monitoring sends
them), spread over several processes, each an asyncio loop over a pool of keep-alive
connections. Latency is measured from the *scheduled* send time to the last byte of the
answer, so a server (or a client) that falls behind shows it instead of hiding it
(no coordinated omission).

    .venv/bin/python -m bench.openloop --url http://127.0.0.1:8765/api/v1/events/alertmanager \
        --token T --rate 1500 --duration 10 --out /tmp/openloop.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import urllib.parse
from pathlib import Path

ALERT = (
    '{"receiver":"opsflow","status":"firing","alerts":[{"status":"firing","labels":'
    '{"alertname":"ServiceDown","host":"bench%02d","instance":"bench%02d:18080","job":"app",'
    '"service":"app","severity":"critical"},"annotations":{"summary":"app on bench%02d is down"},'
    '"startsAt":"2026-11-26T00:48:44.979Z","endsAt":"0001-01-01T00:00:00Z",'
    '"generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"%08x%04x%08x"}],'
    '"groupLabels":{},"commonLabels":{},"commonAnnotations":{},'
    '"externalURL":"http://127.0.0.1:9093","version":"4","groupKey":"{}","truncatedAlerts":0}'
)
MAX_CONNECTIONS = 256
"""Per process; a request finding none free waits, and the wait counts in its latency."""


async def _run(
    url: str, token: str, rate: float, duration: float, warmup: float, run_id: int, proc: int
) -> dict:
    parts = urllib.parse.urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened = 0
    freed = asyncio.Condition()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    lag_max = 0.0

    async def connection(fresh: bool = False):
        """An idle keep-alive connection (LIFO), else a new one; and whether it is reused."""
        nonlocal opened
        async with freed:
            while not fresh and not idle and opened >= MAX_CONNECTIONS:
                await freed.wait()
            if idle and not fresh:
                return idle.pop(), True
            opened += 1
        try:
            return await asyncio.open_connection(host, port), False
        except OSError:
            async with freed:
                opened -= 1
                freed.notify()
            raise

    async def release(conn) -> None:
        async with freed:
            idle.append(conn)
            freed.notify()

    async def drop(writer) -> None:
        nonlocal opened
        writer.close()
        async with freed:
            opened -= 1
            freed.notify()

    async def exchange(reader, writer, request: bytes) -> str:
        writer.write(request)
        header = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await reader.readexactly(length)
        return header[9:12].decode()

    async def one(k: int, scheduled: float, measured: bool) -> None:
        nonlocal errors
        h = k % 50 + 1
        body = (ALERT % (h, h, h, run_id, proc, k)).encode()
        request = (head % len(body)).encode() + body
        fresh = False
        for _attempt in range(2):
            try:
                (reader, writer), reused = await connection(fresh)
            except OSError:
                errors += 1
                return
            try:
                status = await exchange(reader, writer, request)
                break
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await drop(writer)
                if not reused:
                    errors += 1
                    return
                # The server closed this idle keep-alive connection (uvicorn: after 5 s);
                # like any HTTP client, send again once on a new connection.
                fresh = True
        else:
            errors += 1
            return
        done = time.monotonic()
        await release((reader, writer))
        if measured:
            latencies.append(done - scheduled)
            statuses[status] = statuses.get(status, 0) + 1

    interval = 1.0 / rate
    start = time.monotonic() + 0.2
    end = start + warmup + duration
    tasks = set()
    k = 0
    while True:
        scheduled = start + k * interval
        if scheduled >= end:
            break
        now = time.monotonic()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        lag_max = (
            max(lag_max, time.monotonic() - scheduled) if scheduled >= start + warmup else lag_max
        )
        task = asyncio.create_task(one(k, scheduled, scheduled >= start + warmup))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return {
        "latencies": latencies,
        "statuses": statuses,
        "errors": errors,
        "sent": k,
        "connections": opened,
        "send_lag_max_s": lag_max,
    }


def _process(args: tuple) -> dict:
    return asyncio.run(_run(*args))


def run_open_loop(
    url: str,
    token: str,
    rate: float,
    duration: float = 10.0,
    warmup: float = 1.0,
    procs: int = 2,
    run_id: int = 1,
) -> dict:
    """Offer `rate` requests/s for `duration` s (after `warmup`); latency summary in seconds."""
    from bench.common import summarize

    with multiprocessing.get_context("fork").Pool(procs) as pool:
        parts = pool.map(
            _process,
            [(url, token, rate / procs, duration, warmup, run_id, p) for p in range(procs)],
        )
    latencies = [x for part in parts for x in part["latencies"]]
    statuses: dict[str, int] = {}
    for part in parts:
        for status, count in part["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "completed": len(latencies),
        "achieved_rate": len(latencies) / duration,
        "statuses": statuses,
        "errors": sum(p["errors"] for p in parts),
        "connections": sum(p["connections"] for p in parts),
        "send_lag_max_s": max(p["send_lag_max_s"] for p in parts),
        "latency_s": summarize(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--run-id", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run_open_loop(
        args.url, args.token, args.rate, args.duration, args.warmup, args.procs, args.run_id
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
