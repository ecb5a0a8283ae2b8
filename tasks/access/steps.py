"""What every access step shares: validated names, its script, its retry policy, the undo its
rollback hook reads, and the log lines of the change it returns and of its rollback."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any, TypeVar, cast

from prefect import Task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.transactions import Transaction, get_transaction
from pydantic import TypeAdapter

from opsflow.inventory.models import Host
from opsflow.inventory.types import Name, Username
from opsflow.tasks.change import Change
from opsflow.tasks.retry import is_transient

TIMEOUT_S = 60.0
"""Longest wait for one access command on a host."""

_USERNAME: TypeAdapter[str] = TypeAdapter(Username)
_NAME: TypeAdapter[str] = TypeAdapter(Name)
_Step = TypeVar("_Step", bound=Callable[..., Change])
_Undo = Callable[[dict[str, Any]], None]


def valid_names(username: str, entitlement: str | None = None) -> None:
    """Refuse values that are not plain names before they reach a host (ValueError)."""
    _USERNAME.validate_python(username)
    if entitlement is not None:
        _NAME.validate_python(entitlement)


@functools.cache
def script(name: str) -> str:
    """The text of `scripts/<name>.sh`, which runs on a host as `sh -c TEXT opsflow ARG...`."""
    return files(__package__).joinpath("scripts", f"{name}.sh").read_text()


RETRYING: dict[str, Any] = {
    "cache_policy": NONE,
    "retries": 2,
    "retry_delay_seconds": [1, 3],
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
    "timeout_seconds": 120,
}
"""Every changing task is idempotent, so it retries on transient errors (and only on those).

Inside a Prefect transaction use `.with_options(retries=0)`: a failed attempt rolls back
the task's enclosing transaction at once, even if a retry then succeeds.
"""


def made(host: Host, action: str, target: str, what: str, **undo: Any) -> Change:
    """The change a step made on `host`, remembering on its transaction (if it runs in one)
    what its rollback hook needs to undo it: `host` and `undo`."""
    transaction = get_transaction()
    if transaction is not None:
        transaction.set("undo", {"host": host, **undo})
    return Change.made(host.name, action, target, what)


def on_undo(step: Task[..., Change]) -> Callable[[_Undo], _Undo]:
    """Register the decorated function as `step`'s rollback hook: it is called with what the
    step remembered (`made`), and not at all when the step changed nothing."""

    def register(undo: _Undo) -> _Undo:
        @functools.wraps(undo)
        def hook(transaction: Transaction) -> None:
            remembered = transaction.get("undo", None)
            if remembered:
                undo(remembered)

        step.on_rollback(hook)
        return undo

    return register


def log_rollback(change: Change) -> None:
    """Log what a rollback hook's undoing step did."""
    log("rollback %s: %s", change.host, change.detail)


def reported(step: _Step) -> _Step:
    """`step`, logging the change it returns, whether it runs as a task or through `.fn`."""

    @functools.wraps(step)
    def logged(*args: Any, **kwargs: Any) -> Change:
        change = step(*args, **kwargs)
        log("%s: %s", change.host, change.detail)
        return change

    return cast(_Step, logged)


def log(message: str, *args: Any) -> None:
    """Log to the task run's log, or to this module's logger outside any run."""
    try:
        logger: Any = get_run_logger()
    except MissingContextError:  # called as a plain function, outside any run
        logger = logging.getLogger(__name__)
    logger.info(message, *args)
