"""A small client of the desk's HTTP API, for the CLI: one point of contact, one code path."""

from __future__ import annotations

from typing import Any

import requests

from opsflow.errors import PermanentError, TransientError

TIMEOUT_S = 15.0


class DeskError(PermanentError):
    """The desk refused a request; the message carries its reason."""


class DeskUnreachableError(TransientError):
    """The desk did not answer."""


class DeskClient:
    """Calls the desk's `/api/v1` with a bearer token and returns the decoded JSON."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, timeout_s: float = TIMEOUT_S, **kwargs: Any) -> Any:
        """One API call; raises `DeskError` naming the desk's reason on any 4xx/5xx."""
        try:
            response = self._session.request(
                method, f"{self.url}/api/v1{path}", timeout=timeout_s, **kwargs
            )
        except requests.RequestException as exc:
            raise DeskUnreachableError(f"desk at {self.url} did not answer: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
                )
            raise DeskError(f"{method} {path}: {response.status_code}: {detail}")
        return response.json() if response.content else None
