"""Run one task over many hosts with bounded parallelism, finishing every host before reporting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prefect.futures import PrefectFuture

from inventory.models import Host
from opsflow.errors import OpsError

T = TypeVar("T")


@dataclass(frozen=True)
class HostOutcome(Generic[T]):
    """One host's result, or the error that stopped it."""

    host: Host
    result: T | None = None
    error: BaseException | None = None

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
    task: Any,
    hosts: Sequence[Host],
    limit: int,
    **kwargs: Any,
) -> list[HostOutcome[Any]]:
    """Submit `task(host=…, **kwargs)` for every host, at most `limit` at a time.

    Returns one outcome per host in inventory order; a failing host never stops the others.
    """
    return map_calls(task, [(host, kwargs) for host in hosts], limit)


def map_calls(
    task: Any, calls: Sequence[tuple[Host, dict[str, Any]]], limit: int
) -> list[HostOutcome[Any]]:
    """Submit `task(host=…, **kwargs)` for each (host, kwargs), at most `limit` at a time.

    Like `map_hosts`, for fan-outs whose arguments differ from host to host.
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
        running.append((index, task.submit(host=host, **host_kwargs)))
    for index, future in running:
        settle(index, future)
    return [o for o in outcomes if o is not None]


def raise_failures(what: str, outcomes: Sequence[HostOutcome[Any]]) -> None:
    """Raise one `FanOutError` naming every failed host, if any failed."""
    failures = [o for o in outcomes if not o.ok]
    if failures:
        raise FanOutError(what, failures, len(outcomes))
