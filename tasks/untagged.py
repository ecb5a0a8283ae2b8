"""Task runs without tags, for flows on the closed loop: their flow run carries the tags.

Before every task run that has tags, Prefect asks the server for those tags' concurrency
slots, whether or not any limit exists: one round trip, ~40 ms per task run measured on a
worker during `bench.restore_latency`. And each distinct set of tags on task runs costs a
client thread for the life of the process. So the restoration flow run is tagged
(`itil:incident`, `host:web1`) and its tasks are not; filter by the flow run in the UI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.context import TagsContext


@contextmanager
def untagged() -> Iterator[None]:
    """Task runs started in the block carry only the tags their `@task` declares."""
    with TagsContext(current_tags=set()):
        yield
