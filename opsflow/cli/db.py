"""`opsflow db`: the records database's schema, brought up to date by Alembic migrations."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from opsflow.cli.output import JsonOption, console, fail, print_json
from opsflow.errors import OpsError

db_app = typer.Typer(help="The records database: its schema revision and upgrades.")


def _database() -> tuple[str, str]:
    """The records database URL, and how to print it (password hidden)."""
    from sqlalchemy.engine import make_url

    from opsflow.itsm.store.db import default_database_url

    url = default_database_url()
    return url, make_url(url).render_as_string(hide_password=True)


def _refusal(exc: Exception) -> typer.Exit:
    """An error as one line: the database driver's own message, not SQLAlchemy's page of it."""
    return fail(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOption = False) -> None:
    """Bring the records database to the newest schema; run again, it changes nothing.

    A database an older opsflow made, before migrations too, is upgraded in place.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from opsflow.itsm.migrations import upgrade

    url, shown = _database()
    try:
        result = upgrade(url)
    except (OpsError, SQLAlchemyError) as exc:
        raise _refusal(exc) from exc
    if as_json:
        print_json(
            {
                "database": shown,
                "before": result.before,
                "after": result.after,
                "changed": result.changed,
                "premigration_tables": list(result.premigration_tables),
            }
        )
        return
    if not result.changed:
        said = f"already at revision {result.after}, the newest: nothing to do"
    elif result.premigration_tables:
        tables = len(result.premigration_tables)
        said = f"made before migrations ({tables} tables): upgraded to revision {result.after}"
    elif result.before is None:
        said = f"new: made at revision {result.after}"
    else:
        said = f"upgraded from revision {result.before} to {result.after}"
    console.print(Text.assemble(("records database ", "bold"), shown, ": ", said))


@db_app.command("current")
def db_current(as_json: JsonOption = False) -> None:
    """Print the records database's schema revision and the newest this opsflow knows."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from opsflow.itsm.migrations import current, head

    url, shown = _database()
    parsed = make_url(url)
    revision = None
    exists = parsed.get_backend_name() != "sqlite" or Path(parsed.database or "").is_file()
    if exists:  # reading must not make an SQLite file where there was none
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                revision = current(conn)
        except SQLAlchemyError as exc:
            raise _refusal(exc) from exc
        finally:
            engine.dispose()
    newest = head()
    if as_json:
        print_json({"database": shown, "exists": exists, "revision": revision, "head": newest})
        return
    if not exists:
        state = "no database yet: `opsflow db upgrade` makes it"
    elif revision is None:
        state = "no revision (empty, or made before migrations): run `opsflow db upgrade`"
    elif revision == newest:
        state = f"revision {revision}, the newest"
    else:
        state = f"revision {revision}; the newest is {newest}: run `opsflow db upgrade`"
    console.print(Text.assemble(("records database ", "bold"), shown, ": ", state))
