"""Run a flow in a worker's thread without the costs a long-lived worker need not pay.

A flow called from a fresh thread pays, before its first line runs, for things a worker
can set up once: Prefect's settings copied and validated again to turn the heartbeat off
(50-90 ms), an SSL context built for a new API client (~40 ms, the CA bundle parsed), and
the server asked for its default result storage (~10 ms, twice). Measured with py-spy on
a worker during `bench.restore_latency`, these were a third of each triage and restoration
run's start. Every run is still created, reported and audited by Prefect as before.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.context import SettingsContext, SyncClientContext, get_settings_context
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, Settings

R = TypeVar("R")


class _Shared:
    """What every run of this process reuses: the quiet settings and the SSL context."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base: Settings | None = None
        self.quiet: Settings | None = None
        self.ssl: ssl.SSLContext | None = None

    def settings_for(self, base: Settings) -> Settings:
        """`base` with the flow heartbeat off, made once per base settings object.

        The heartbeat thread is joined when a sync flow ends and sleeps in 1 s steps, which
        adds up to a second to every run (measured: 1.1 s per trivial flow run with it,
        0.09 s without). Triage and restoration need that second; a process that dies
        mid-run leaves its run Running until the lease's takeover marks it Crashed.
        """
        with self.lock:
            if self.base is not base or self.quiet is None:
                self.quiet = base.copy_with_update(
                    updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
                )
                self.base = base
            return self.quiet

    def ssl_context(self, settings: Settings) -> ssl.SSLContext:
        """The API client's SSL context as Prefect would build it, built once."""
        with self.lock:
            if self.ssl is None:
                if settings.api.tls_insecure_skip_verify:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                else:
                    import certifi

                    context = ssl.create_default_context(
                        cafile=settings.api.ssl_cert_file or certifi.where()
                    )
                self.ssl = context
            return self.ssl


_shared = _Shared()


def run_flow_here(flow: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Call `flow` in this thread as a worker does: heartbeat off, one SSL context shared by
    the process's API clients. (The flows a worker runs say `persist_result=False`, so the
    server is not asked whether results persist either.)"""
    context = get_settings_context()
    settings = _shared.settings_for(context.settings)
    with SettingsContext(profile=context.profile, settings=settings):
        client = get_client(
            sync_client=True, httpx_settings={"verify": _shared.ssl_context(settings)}
        )
        # Registered as the default client (no httpx settings of its own), so that Prefect's
        # own `get_client()` calls during the run (result storage, ...) reuse it too rather
        # than each building a client and an SSL context again.
        with SyncClientContext.model_construct(client=client):
            return flow(*args, **kwargs)
