"""What the desk refuses before FastAPI reads a request: bodies too large, strangers' bodies.

Plain ASGI middleware: `@app.middleware("http")` (Starlette's BaseHTTPMiddleware) wraps
every request in a task group and a memory stream, ~20% of the intake's CPU.
"""

from __future__ import annotations

from typing import Any

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from opsflow.desk.deps import header_person
from opsflow.desk.estate import EstateCache, EstateUnavailableError

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Larger bodies are refused (413) as soon as they are seen: a webhook of 10,000 alerts fits."""
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class BodyLimit:
    """Refuse bodies larger than MAX_BODY_BYTES (413) without reading them whole.

    A declared Content-Length is checked before anything is read; a chunked body has none,
    so its bytes are counted as the app receives them and the request is refused as soon as
    they pass the limit.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                response = JSONResponse(
                    {"detail": f"body larger than {MAX_BODY_BYTES} bytes"},
                    status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                )
                await response(scope, receive, send)
                return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                # Starlette's HTTPException: FastAPI lets it through its body parsing as is.
                raise StarletteHTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE, f"body larger than {MAX_BODY_BYTES} bytes"
                )
            return message

        await self.app(scope, counted, send)


class SenderFirst:
    """Refuse (401) a request to the API that comes with a body but no known bearer token.

    FastAPI reads and parses a route's body before it resolves the route's dependencies,
    authentication included: without this, anyone could make the desk read and parse
    8 MiB. Roles are still checked by the routes; this only turns strangers away early.
    """

    def __init__(self, app: Any, estate: EstateCache) -> None:
        self.app = app
        self.estate = estate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in BODY_METHODS
            and scope["path"].startswith("/api/")
        ):
            headers = dict(scope["headers"])
            has_body = headers.get(b"content-length", b"0") != b"0" or (
                b"transfer-encoding" in headers
            )
            if has_body and not self._known(headers.get(b"authorization")):
                response = JSONResponse(
                    {"detail": "bearer token required (or unknown)"},
                    status_code=status.HTTP_401_UNAUTHORIZED,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _known(self, authorization: bytes | None) -> bool:
        try:
            estate = self.estate()
        except EstateUnavailableError:
            return True  # the route answers 503 itself
        value = authorization.decode("latin-1") if authorization else None
        return header_person(estate, value) is not None
