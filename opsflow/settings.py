"""Where opsflow keeps its state and which estate it manages, from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OpsflowSettings(BaseSettings):
    """Settings read from `OPSFLOW_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="OPSFLOW_", extra="ignore")

    home: Path = Field(
        default=Path.home() / ".opsflow",
        description="Directory for opsflow's own state: the lab, the Prefect home, the records.",
    )
    inventory: Path | None = Field(
        default=None,
        description="Estate directory of YAML files; when unset, the lab's generated estate.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the records store; SQLite under the home when unset.",
    )

    @property
    def lab_dir(self) -> Path:
        """Where the local lab keeps its hosts, keys and generated estate."""
        return self.home / "lab"

    @property
    def estate_dir(self) -> Path:
        """The estate opsflow manages: the configured one, or the lab's."""
        return self.inventory or self.lab_dir / "estate"


def get_settings() -> OpsflowSettings:
    """Read the settings afresh, so a changed environment takes effect."""
    return OpsflowSettings()
