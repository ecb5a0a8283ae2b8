"""What `opsflow up` keeps in the opsflow home for itself and for other shells: a home private
to its owner, and `up.env`, where what `up` started is and how to reach it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

UP_ENV_FILE = "up.env"
"""In the opsflow home: where what `up` started is and how to reach it, for other shells."""
UP_ENV_KEYS = (
    "PREFECT_HOME",
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "OPSFLOW_DATABASE_URL",
    "OPSFLOW_DESK_URL",
    "OPSFLOW_INVENTORY",
)


def secure_home(home: Path) -> None:
    """Make the opsflow home private to its owner (0700): it holds keys, tokens and records."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)


def write_up_env(home: Path, env: dict[str, str]) -> Path:
    """Write where what `up` started is, with the secrets to reach it, to a 0600 file in the
    home: the Prefect API and its auth string, the records' URL, the desk, the estate.

    Shell syntax, so `set -a; . ~/.opsflow/up.env` also serves the `prefect` command.
    """
    path = home / UP_ENV_FILE
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        for key in UP_ENV_KEYS:
            if key in env:
                out.write(f"{key}={shlex.quote(env[key])}\n")
    partial.replace(path)
    return path


def use_up_env(home: Path) -> None:
    """Point this process at what `up` started (Prefect API, records, desk, estate), unless
    the environment already says otherwise.

    Must run before `prefect` is imported: Prefect reads its settings once, at import.
    opsflow's settings are read afresh by every `get_settings()`.
    """
    path = home / UP_ENV_FILE
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            if key in UP_ENV_KEYS:
                os.environ.setdefault(key, value)
