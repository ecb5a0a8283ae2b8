"""Alembic's environment for the records: it migrates on the connection it is given.

`itsm.migrations` passes the connection (in its transaction and under its lock) in the
configuration's attributes, and the code's tables when it compares them (`new_revision`);
there is no alembic.ini and no URL to read here.
"""

from __future__ import annotations

from alembic import context

attributes = context.config.attributes
if attributes.get("connection") is None:
    raise RuntimeError("run migrations through itsm.migrations (upgrade, new_revision)")
context.configure(
    connection=attributes["connection"],
    target_metadata=attributes.get("target_metadata"),
    render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move tables instead
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
