"""Run one task over many hosts with bounded parallelism, finishing every host before reporting.

A fan-out is one Prefect task run, not one per host: a task run costs the flow ~5-7 ms of
client time and the Prefect server more to record, which on 200 hosts was more than the SSH
work itself. Inside it a thread pool calls the task's function on each host, with the
task's own retry policy applied per host (attempts, delays, jitter, retry condition), so a
transient failure on one host is retried there and a failure on one host never stops the
others. The run publishes a table artifact with every host's outcome and logs each failure.

Where each host's call must be a task run of its own (Prefect transactions whose rollback
hooks undo one host's change), `submit_calls` submits one task run per host instead.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prefect import Task, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.states import Failed
from prefect.utilities.annotations import quote
from prefect.utilities.math import clamped_poisson_interval

from opsflow.errors import OpsError
from opsflow.inventory.models import Host
from opsflow.tasks.change import Change

T = TypeVar("T")

DETAIL_CHARS = 300
"""How much of a host's error or detail its row in the fan-out's table keeps."""


@dataclass(frozen=True)
class HostOutcome(Generic[T]):
    """One host's result, or the error that stopped it, after `attempts` tries."""

    host: Host
    result: T | None = None
    error: BaseException | None = None
    attempts: int = 1
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the task succeeded on this host."""
        return self.error is None


class FanOutError(OpsError):
    """Some hosts failed; every host was attempted and each failure is listed."""

    def __init__(self, what: str, failures: list[HostOutcome[Any]], total: int):
        self.failures = failures
        lines = "\n".join(f"  - {o.host.name}: {o.error}" for o in failures)
        super().__init__(f"{what}: {len(failures)} of {total} hosts failed:\n{lines}")


def map_hosts(
    task_: Task[..., Any],
    hosts: Sequence[Host],
    limit: int,
    **kwargs: Any,
) -> list[HostOutcome[Any]]:
    """Run `task_`'s function as `fn(host=…, **kwargs)` on every host, at most `limit` at once.

    Returns one outcome per host in inventory order; a failing host never stops the others.
    """
    return map_calls(task_, [(host, kwargs) for host in hosts], limit)


def map_calls(
    task_: Task[..., Any], calls: Sequence[tuple[Host, dict[str, Any]]], limit: int
) -> list[HostOutcome[Any]]:
    """Run `task_`'s function as `fn(host=…, **kwargs)` for each (host, kwargs), in one task run.

    Like `map_hosts`, for fan-outs whose arguments differ from host to host.
    """
    if limit < 1:
        raise ValueError("limit: must be at least 1")
    if not calls:
        return []
    return fan_out(  # type: ignore[call-overload]  # quoted arguments, unwrapped by Prefect
        task_.name, len(calls), quote(task_), quote(list(calls)), limit
    )


@task(cache_policy=NONE, task_run_name="{name}[{host_count} hosts]")
def fan_out(
    name: str,
    host_count: int,
    task_: Task[..., Any],
    calls: list[tuple[Host, dict[str, Any]]],
    limit: int,
) -> list[HostOutcome[Any]]:
    """Call `task_`'s function on each host in a pool of `limit` threads; table every outcome.

    Args:
        name: The task's name, which names this run.
        host_count: How many calls there are, for the run's name.
        task_: The task whose function and retry policy each host gets.
        calls: (host, keyword arguments) per call.
        limit: Calls running at once.
    """
    logger = get_run_logger()
    started = time.monotonic()
    threads = max(1, min(limit, len(calls)))
    with ThreadPoolExecutor(threads, thread_name_prefix="opsflow-fan-out") as pool:
        # Each call runs in a copy of this run's context: its logs are this run's logs.
        futures = [
            pool.submit(contextvars.copy_context().run, _call_with_retries, task_, host, kwargs)
            for host, kwargs in calls
        ]
        outcomes = [f.result() for f in futures]
    failures = [o for o in outcomes if not o.ok]
    for outcome in failures:
        logger.error("%s: %s failed: %s", outcome.host.name, name, outcome.error)
    elapsed = time.monotonic() - started
    summary = (
        f"{name} on {len(calls)} hosts: "
        f"{len(calls) - len(failures)} succeeded, {len(failures)} failed"
    )
    logger.info("%s in %.2fs", summary, elapsed)
    create_table_artifact(
        table=[_row(o) for o in outcomes],
        description=f"**{summary}** in {elapsed:.2f} s.",
    )
    return outcomes


def _call_with_retries(task_: Task[..., Any], host: Host, kwargs: dict[str, Any]) -> HostOutcome:
    """One host's call, retried as the task would be: only where its retry condition allows."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = task_.fn(host=host, **kwargs)
        except Exception as exc:
            if attempt > task_.retries or not _may_retry(task_, exc):
                return HostOutcome(host, error=exc, attempts=attempt, duration_s=_since(started))
            delay = _retry_delay(task_, attempt)
            get_run_logger().warning(
                "%s: %s attempt %d of %d failed (%s); trying again in %.1fs",
                host.name,
                task_.name,
                attempt,
                task_.retries + 1,
                exc,
                delay,
            )
            time.sleep(delay)
        else:
            return HostOutcome(host, result=result, attempts=attempt, duration_s=_since(started))


def _may_retry(task_: Task[..., Any], exc: Exception) -> bool:
    """The task's `retry_condition_fn`, asked as Prefect asks it (no task run: None)."""
    if task_.retry_condition_fn is None:
        return True
    state: State[Any] = Failed(
        data=exc, message=f"Task run encountered unexpected exception: {exc!r}"
    )
    return bool(task_.retry_condition_fn(task_, None, state))  # type: ignore[arg-type]


def _retry_delay(task_: Task[..., Any], attempt: int) -> float:
    """Seconds before the next attempt, from the task's delays and jitter, as Prefect does."""
    delays = task_.retry_delay_seconds
    if not delays:
        return 0.0
    if isinstance(delays, Sequence):
        delay = float(delays[min(attempt, len(delays)) - 1])
    else:
        delay = float(delays)
    if task_.retry_jitter_factor and delay > 0:
        delay = clamped_poisson_interval(delay, clamping_factor=task_.retry_jitter_factor)
    return delay


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _row(outcome: HostOutcome[Any]) -> dict[str, Any]:
    """The host's line in the fan-out's table: outcome, attempts, time, and what happened."""
    if outcome.ok:
        change = outcome.result.state if isinstance(outcome.result, Change) else ""
        detail = str(getattr(outcome.result, "detail", "") or "")
    else:
        change, detail = "", f"{type(outcome.error).__name__}: {outcome.error}"
    return {
        "host": outcome.host.name,
        "outcome": "ok" if outcome.ok else "failed",
        "change": change,
        "attempts": outcome.attempts,
        "seconds": outcome.duration_s,
        "detail": detail[:DETAIL_CHARS],
    }


class Submitter(Protocol):
    """Anything that submits one task run: a Task, or a wrapper that adds a transaction."""

    def submit(self, **kwargs: Any) -> PrefectFuture[Any]: ...


def submit_calls(
    submitter: Submitter, calls: Sequence[tuple[Host, dict[str, Any]]], limit: int
) -> list[HostOutcome[Any]]:
    """Submit one task run per (host, kwargs), at most `limit` at a time; every host finishes.

    Slower than `map_calls` by a task run per host; for calls that must each be their own
    task run, such as changes a Prefect transaction's rollback hooks undo host by host.
    """
    if limit < 1:
        raise ValueError("limit: must be at least 1")
    outcomes: list[HostOutcome[Any] | None] = [None] * len(calls)
    running: list[tuple[int, PrefectFuture[Any]]] = []

    def settle(index: int, future: PrefectFuture[Any]) -> None:
        try:
            outcomes[index] = HostOutcome(calls[index][0], result=future.result())
        except Exception as exc:
            outcomes[index] = HostOutcome(calls[index][0], error=exc)

    for index, (host, host_kwargs) in enumerate(calls):
        if len(running) >= limit:
            settle(*running.pop(0))
        running.append((index, submitter.submit(host=host, **host_kwargs)))
    for index, future in running:
        settle(index, future)
    return [o for o in outcomes if o is not None]


def raise_failures(what: str, outcomes: Sequence[HostOutcome[Any]]) -> None:
    """Raise one `FanOutError` naming every failed host, if any failed."""
    failures = [o for o in outcomes if not o.ok]
    if failures:
        raise FanOutError(what, failures, len(outcomes))
