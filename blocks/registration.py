"""Register opsflow's block types with the Prefect server and store credentials as blocks."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from opsflow.blocks.alertmanager import AlertmanagerCredentials
from opsflow.blocks.http import HttpCredentials
from opsflow.blocks.ssh import SshCredentials

BLOCK_TYPES = (SshCredentials, AlertmanagerCredentials, HttpCredentials)


def register_block_types() -> None:
    """Make opsflow's block types appear in the Prefect UI's block catalogue."""
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()


def save_desk_token(token: str, name: str = "opsflow-desk-token") -> None:
    """Store the token routine jobs post events to the desk with, as a Secret block."""
    from prefect.blocks.system import Secret

    Secret(value=token).save(name, overwrite=True)


def save_http_credentials(
    name: str,
    bearer_token: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> HttpCredentials:
    """Store a bearer token, or a user and password, as the HTTP credentials block called
    `name` (a runbook's HTTP steps name it); ValueError when it is neither."""
    block = HttpCredentials(
        bearer_token=SecretStr(bearer_token.strip()) if bearer_token is not None else None,
        username=username,
        password=SecretStr(password) if password is not None else None,
    )
    block.save(name, overwrite=True)
    return block


def save_ssh_credentials(
    name: str,
    key_file: Path,
    username: str = "root",
    passphrase: str | None = None,
) -> SshCredentials:
    """Store a private key file's content as an SSH credentials block called `name`."""
    block = SshCredentials(
        username=username,
        private_key=SecretStr(key_file.read_text()),
        passphrase=SecretStr(passphrase) if passphrase else None,
    )
    block.load_key()
    block.save(name, overwrite=True)
    return block
