"""The HTTP credentials blocks: basic auth or a bearer token for an HTTP API, kept in Prefect.

`HttpCredentials` is what a declared runbook's HTTP steps name (`http.credentials` of a step);
`blocks.alertmanager` uses the same shape for Alertmanager's API. The token or password stays
in Prefect, never in the estate, a parameter or a log.
"""

from __future__ import annotations

from typing import Self

import requests
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator


class BasicOrBearerCredentials(Block):
    """Basic auth (username and password) or a bearer token, exactly one of the two.

    The shape the HTTP credentials blocks share; each block type subclasses it with its own
    name and slug, so the blocks users saved keep their type.
    """

    username: str | None = Field(
        default=None, title="Username", description="Basic auth user, with the password."
    )
    password: SecretStr | None = Field(
        default=None, title="Password", description="Basic auth password of the user."
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        title="Bearer token",
        description="Sent as `Authorization: Bearer …` instead of basic auth.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        basic = self.username is not None or self.password is not None
        if basic and (self.username is None or self.password is None):
            raise ValueError("basic auth needs both username and password")
        if basic == (self.bearer_token is not None):
            raise ValueError("set either username and password, or bearer_token")
        return self

    def secrets(self) -> list[str]:
        """The secret values, to mask wherever a response or an error might echo them."""
        return [s.get_secret_value() for s in (self.password, self.bearer_token) if s is not None]

    def get_client(self) -> requests.Session:
        """A session that authenticates every request; use it in a `with` statement."""
        session = requests.Session()
        if self.bearer_token is not None:
            session.headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        else:
            assert self.password is not None, "the validator requires a password without a token"
            session.auth = (self.username or "", self.password.get_secret_value())
        return session


class HttpCredentials(BasicOrBearerCredentials):
    """Basic auth (username and password) or a bearer token for an HTTP API."""

    _block_type_name = "opsflow HTTP credentials"
    _block_type_slug = "opsflow-http-credentials"
    _description = "How a runbook's HTTP steps authenticate to an API (admin API, load balancer)."
