"""What every `opsflow` command module shares: the consoles, the desk call, errors, --json."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from opsflow.cli.client import DeskClient
from opsflow.errors import OpsError
from opsflow.settings import get_settings

# Markup and emoji codes off: what the consoles print (symptoms, hosts, summaries, worklogs)
# comes from alerts and people, and "[/]" or ":x:" in it must print as typed, never as style.
# Styled text is built with rich.text.Text instead.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: object, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr (never read as markup), its lines whole for the terminal
    to wrap (paths and names in it stay one piece to copy), and return the exit to raise."""
    err_console.print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)
    return typer.Exit(code)


def call_desk(method: str, path: str, **kwargs: Any) -> Any:
    """One desk API call as the CLI's user; a refusal is printed and exits 1."""
    settings = get_settings()
    try:
        return DeskClient(settings.desk_url, settings.api_token()).call(method, path, **kwargs)
    except OpsError as exc:
        raise fail(exc) from exc


def print_json(data: Any) -> None:
    """The desk's answer as JSON, for scripts."""
    typer.echo(json.dumps(data, indent=2))


def name_values(pairs: list[str], what: str) -> dict[str, str]:
    """NAME=VALUE arguments as a dict; a malformed one exits 2 naming it."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise fail(f"{what} {pair!r}: expected NAME=VALUE", code=2)
        values[name] = value
    return values
