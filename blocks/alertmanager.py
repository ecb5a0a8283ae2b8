"""The Alertmanager credentials block: how opsflow authenticates to a team's Alertmanager.

Alertmanager itself asks for basic auth when its `--web.config.file` sets users; a proxy in
front of it may ask for a bearer token instead. The estate names the block
(`alertmanager.credentials` in estate.yaml); the secrets stay in Prefect.
"""

from __future__ import annotations

import requests
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator


class AlertmanagerCredentials(Block):
    """Basic auth (username and password) or a bearer token for Alertmanager's API."""

    _block_type_name = "opsflow Alertmanager credentials"
    _block_type_slug = "opsflow-alertmanager-credentials"
    _description = "How opsflow authenticates to Alertmanager to mirror maintenance windows."

    username: str | None = Field(
        default=None, title="Username", description="Basic auth user, with the password."
    )
    password: SecretStr | None = Field(
        default=None, title="Password", description="Basic auth password of the user."
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        title="Bearer token",
        description="Sent as `Authorization: Bearer …` instead of basic auth (e.g. to a proxy).",
    )

    @model_validator(mode="after")
    def _one_way(self) -> AlertmanagerCredentials:
        basic = self.username is not None or self.password is not None
        if basic and (self.username is None or self.password is None):
            raise ValueError("basic auth needs both username and password")
        if basic == (self.bearer_token is not None):
            raise ValueError("set either username and password, or bearer_token")
        return self

    def get_client(self) -> requests.Session:
        """A session that authenticates every request; use it in a `with` statement."""
        session = requests.Session()
        if self.bearer_token is not None:
            session.headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        else:
            assert self.password is not None, "the validator requires a password without a token"
            session.auth = (self.username or "", self.password.get_secret_value())
        return session
