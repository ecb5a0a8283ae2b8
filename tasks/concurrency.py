"""One flow at a time acting on a host: a Prefect global concurrency slot per host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

SLOT_WAIT_S = 300.0
SLOT_LEASE_S = 60.0
"""How long a slot stays held without renewal (its holder renews it every 45 s): a process
that dies holding a host's slot frees it within this and a pass of the server's repossessor
(15 s), so whoever takes its work over waits about a minute for the host, not Prefect's
default lease of five (as long as `SLOT_WAIT_S`: the taker would give up)."""

LIMIT_CHECK_S = 60.0
_limit_seen_at: dict[str, float] = {}
"""When this process last saw each host's limit on the server: asking before every
restoration would cost the closed loop a round trip; asking once a minute still recreates
a limit someone deleted."""


def slot_name(host: str) -> str:
    """The global concurrency limit's name for a host."""
    return f"host-{host}"


@contextmanager
def host_slot(host: str, timeout_s: float = SLOT_WAIT_S) -> Iterator[None]:
    """Hold the host's single slot for the block; other flows wait for it (up to `timeout_s`)."""
    name = slot_name(host)
    if time.monotonic() - _limit_seen_at.get(name, -LIMIT_CHECK_S) >= LIMIT_CHECK_S:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with suppress(ObjectAlreadyExists):
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1)
                    )
        _limit_seen_at[name] = time.monotonic()
    with concurrency(
        name, occupy=1, timeout_seconds=timeout_s, lease_duration=SLOT_LEASE_S, strict=True
    ):
        yield
