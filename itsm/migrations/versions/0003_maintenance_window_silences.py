"""maintenance_windows.silence_ids: the Alertmanager silences that mirror a declared window.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    column_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("maintenance_windows", sa.Column("silence_ids", column_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(
        "maintenance_windows", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.drop_column("silence_ids")
