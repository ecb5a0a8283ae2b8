"""The command reference, docs/cli.md, generated from the `opsflow` command itself so it
cannot drift from it: `python -m opsflow.cli.reference` writes it, `--check` says whether the
committed one is current (a test runs that)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import typer
from typer.cli import get_docs_for_click

from opsflow.cli.main import app

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
"""Where the reference lives in a checkout."""

PREAMBLE = (
    "Every `opsflow` command, its arguments and options, as `opsflow COMMAND --help` prints "
    "them. Generated from the CLI by `python -m opsflow.cli.reference` (`make docs`): do not "
    "edit by hand; a test fails when it is out of date.\n\n"
)


def render_reference() -> str:
    """The Markdown reference of every command, in the order `--help` lists them."""
    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="opsflow")
    with ctx:
        docs = get_docs_for_click(
            obj=command, ctx=ctx, name="opsflow", title="opsflow command reference"
        )
    heading, _, body = docs.partition("\n\n")
    return f"{heading}\n\n{PREAMBLE}{body.strip()}\n"


def main(argv: list[str] | None = None) -> int:
    """Write the reference, or with --check exit 1 if the written one differs from the CLI."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="Only compare; exit 1 if stale.")
    parser.add_argument("--path", type=Path, default=REFERENCE, help="The reference file.")
    args = parser.parse_args(argv)
    rendered = render_reference()
    current = args.path.read_text() if args.path.is_file() else None
    if args.check:
        if current != rendered:
            print(
                f"{args.path} is out of date: run python -m opsflow.cli.reference", file=sys.stderr
            )
            return 1
        return 0
    if current != rendered:
        args.path.parent.mkdir(parents=True, exist_ok=True)
        args.path.write_text(rendered)
        print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
