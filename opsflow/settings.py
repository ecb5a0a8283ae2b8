"""Where opsflow keeps its state and which estate it manages, from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    desk_url: str = Field(
        default="http://127.0.0.1:8765",
        description="Where the CLI reaches the service desk's HTTP API.",
    )
    token: str | None = Field(
        default=None,
        description="The CLI user's desk API token; default: the lab operator's token file.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the records store; when unset, `opsflow up` keeps them in its "
            "PostgreSQL cluster (and tells other shells so), anything else in SQLite under "
            "the home."
        ),
    )
    postgres_port: int = Field(
        default=15432,
        ge=1,
        le=65535,
        description="Loopback port of the PostgreSQL cluster `opsflow up` runs in the home.",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a worker holds a restoration, request or access change it is carrying "
            "without renewing; when a worker stops, another takes its work over once those "
            "leases lapse (and takes up work nobody leased within one)."
        ),
    )

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How opsflow's processes write their logs: a line of text per record, "
        "or a JSON object per line (for log shippers).",
    )
    access_log: bool = Field(
        default=True,
        description="Whether the desk logs every request it answers (method, path, status, "
        "duration, client); a busy intake writes a line per webhook.",
    )

    @property
    def lab_dir(self) -> Path:
        """Where the local lab keeps its hosts, keys and generated estate."""
        return self.home / "lab"

    def api_token(self) -> str | None:
        """The token the CLI sends: OPSFLOW_TOKEN, else the lab operator's token file."""
        if self.token:
            return self.token
        path = self.lab_dir / "tokens" / "alice"
        return path.read_text().strip() if path.is_file() else None

    @property
    def estate_dir(self) -> Path:
        """The estate opsflow manages: the configured one, or the lab's."""
        return self.inventory or self.lab_dir / "estate"


def get_settings() -> OpsflowSettings:
    """Read the settings afresh, so a changed environment takes effect."""
    return OpsflowSettings()
