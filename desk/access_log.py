"""The desk's access log: a line per request answered, and the intake's latency.

Each line says method, path, status, duration and client (`opsflow.desk.access`, INFO; in
JSON logs each is a field too). Never the headers, so never the bearer token; a query value
whose name suggests a secret is masked; characters that could forge a line (newlines,
control characters) are escaped and long paths cut, since paths come from anyone.
Prometheus's successful scrapes of `/metrics` are left out: its `up` series records them.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from opsflow.desk.metrics import observe_request

logger = logging.getLogger("opsflow.desk.access")

MAX_PATH_CHARS = 512
SECRET_NAME = re.compile(r"token|key|secret|passw|auth|sig|credential", re.IGNORECASE)
"""Query parameters whose value is masked: none of the desk's carries a secret, but a client
may send one anyway (`?access_token=`) and a log is kept longer than the request."""
MASK = "***"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str, limit: int = MAX_PATH_CHARS) -> str:
    """`text` on one line: control characters as `\\xNN`, cut to `limit` characters."""
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:limit] + "..."


def target(scope: dict[str, Any]) -> str:
    """The request's path and query as logged: secret-looking query values masked."""
    path = scope.get("path", "")
    raw = scope.get("query_string", b"").decode("latin-1")
    if raw:
        pairs = parse_qsl(raw, keep_blank_values=True)
        query = "&".join(f"{k}={MASK if SECRET_NAME.search(k) else v}" for k, v in pairs)
        path = f"{path}?{query}"
    return _printable(path)


class AccessLog:
    """Logs every HTTP request once it is answered (or fails), and times the intake's.

    A plain ASGI middleware, as `BodyLimit` is: Starlette's BaseHTTPMiddleware costs the
    intake ~20% of its CPU. `enabled=False` keeps the timing and drops the log lines.
    """

    def __init__(self, app: Any, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before it answers

        async def answer(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            seconds = time.perf_counter() - started
            method, path = scope["method"], scope["path"]
            observe_request(method, path, status, seconds)
            if self.enabled and not (path == "/metrics" and status < 300):
                self._log(scope, method, status, seconds)

    @staticmethod
    def _log(scope: Any, method: str, status: int, seconds: float) -> None:
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        path = target(scope)
        duration_ms = round(seconds * 1000, 1)
        logger.info(
            "%s %s %d %.1fms %s",
            _printable(method, 16),
            path,
            status,
            duration_ms,
            peer,
            extra={
                "method": _printable(method, 16),
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "client": peer,
            },
        )
