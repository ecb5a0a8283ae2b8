"""What every `opsflow` command module shares: the consoles, the desk call, errors, --json,
and tables that fit the terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import typer
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.table import Table
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
StatesOption = Annotated[list[str] | None, typer.Option(help="Only these states.")]
RequesterOption = Annotated[str | None, typer.Option(help="Only this person's.")]
LimitOption = Annotated[int, typer.Option()]


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


def list_records(path: str, **filters: Any) -> Any:
    """A listing from the desk, filtered by the filters given a value (the others unset)."""
    return call_desk("GET", path, params={name: v for name, v in filters.items() if v})


def print_json(data: Any) -> None:
    """The desk's answer as JSON, for scripts."""
    typer.echo(json.dumps(data, indent=2))


def audit_lines(record: dict[str, Any]) -> list[Text]:
    """The audit trail the desk sent with a record (none if it sent none), an entry a line."""
    return [
        Text(f"  {entry['at'][:23]}  {entry['actor']}  {entry['action']}")
        for entry in record.get("audit", [])
    ]


def print_answer(data: Any, as_json: bool, *human: RenderableType) -> None:
    """The desk's answer `data` as JSON for scripts (`--json`); otherwise `human`, what people
    read of it, one renderable after the other."""
    if as_json:
        print_json(data)
        return
    for renderable in human:
        console.print(renderable)


def name_values(pairs: list[str], what: str) -> dict[str, str]:
    """NAME=VALUE arguments as a dict; a malformed one exits 2 naming it."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise fail(f"{what} {pair!r}: expected NAME=VALUE", code=2)
        values[name] = value
    return values


@dataclass(frozen=True)
class Column:
    """A column of a table people read: what may bend when the terminal is narrow.

    Attributes:
        header: the column's title.
        whole: never wrapped nor cut (record numbers, states, priorities, counts).
        drop: 0 to show it always; otherwise it is left out when the terminal is too narrow,
            the highest `drop` first.
        min_width: for a column that may wrap, the width it keeps (or its text's, if less)
            before droppable columns give way.
        justify: where text sits in the column.
    """

    header: str
    whole: bool = False
    drop: int = 0
    min_width: int = 12
    justify: Literal["left", "right"] = "left"


@dataclass(frozen=True)
class Short:
    """A cell with a shorter form used when the terminal is narrow (a time as `5m ago`)."""

    full: str
    short: str


Cell = str | Text | Short

BORDER_AND_PADDING = 3
"""Cells a column costs beyond its text in rich's default table: a border and a space each
side; the table's closing border adds one more."""


def _lines(cell: Cell, short: bool) -> list[str]:
    if isinstance(cell, Short):
        cell = cell.short if short else cell.full
    return (cell.plain if isinstance(cell, Text) else cell).split("\n")


def _natural(column: Column, cells: list[Cell], short: bool) -> int:
    return max(cell_len(line) for cell in [column.header, *cells] for line in _lines(cell, short))


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    title: str | None = None,
    width: int | None = None,
) -> Table:
    """A table that fits `width` (the terminal's) without cutting what people scan.

    Narrower than its natural width, it first uses the short form of `Short` cells, then
    leaves out the droppable columns, highest `drop` first, until the others fit; columns
    that may wrap then share the room, folding rather than cutting, and `whole` ones are
    never wrapped nor cut (a record number is always whole).
    """
    width = width or console.width
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    shown = list(range(len(columns)))
    short = False

    def needed(widths: list[int]) -> int:
        return sum(widths) + BORDER_AND_PADDING * len(widths) + 1

    def naturals() -> list[int]:
        return [_natural(columns[i], cells[i], short) for i in shown]

    if needed(naturals()) > width:
        short = True
    while needed(naturals()) > width:
        floors = [
            n if columns[i].whole else min(n, columns[i].min_width)
            for i, n in zip(shown, naturals(), strict=True)
        ]
        droppable = [i for i in shown if columns[i].drop]
        if needed(floors) <= width or not droppable:
            break
        shown.remove(max(droppable, key=lambda i: columns[i].drop))
    natural = naturals()
    widths = list(natural)
    cramped = False
    if needed(natural) > width:
        widths = [n if columns[i].whole else min(n, 6) for i, n in zip(shown, natural, strict=True)]
        # Narrower than even the whole columns (a 40-column pane): fold them too, not cut.
        cramped = needed(widths) > width
        if cramped:
            widths = [1] * len(shown)
        _share(widths, natural, width - needed(widths))
    table = Table(title=title)
    for k, i in enumerate(shown):
        column = columns[i]
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=column.whole and not cramped,
            overflow="fold",
            width=widths[k],
        )
    for row in rows:
        table.add_row(*(_text(row[i], short) for i in shown))
    return table


def _share(widths: list[int], natural: list[int], spare: int) -> None:
    """Give `spare` cells to the columns below their natural width, narrowest first."""
    while spare > 0:
        growing = [k for k, w in enumerate(widths) if w < natural[k]]
        if not growing:
            return
        widths[min(growing, key=lambda k: widths[k])] += 1
        spare -= 1


def _text(cell: Cell, short: bool) -> str | Text:
    if isinstance(cell, Short):
        return cell.short if short else cell.full
    return cell


def moment(iso: str | None, now: datetime | None = None) -> Short | str:
    """A time the desk sent (ISO 8601) as `YYYY-MM-DD HH:MM`, or as `5m ago` / `in 3h` (a date
    beyond 30 days) where the terminal is narrow."""
    if not iso:
        return ""
    at = datetime.fromisoformat(iso)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    full = f"{at.astimezone(UTC):%Y-%m-%d %H:%M}"
    seconds = ((now or datetime.now(UTC)) - at).total_seconds()
    size = abs(seconds)
    if size >= 30 * 86400:
        return Short(full, full[:10])
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if size >= length or unit == "s":
            amount = f"{int(size // length)}{unit}"
            break
    return Short(full, f"{amount} ago" if seconds >= 0 else f"in {amount}")
