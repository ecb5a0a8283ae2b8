"""failed_run_pages: failed ITIL runs paged at once or held for one digest page (itsm.store.paging).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    time = sa.DateTime(timezone=True)
    op.create_table(
        "failed_run_pages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("team", sa.String(255), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("run", json, nullable=False),
        sa.Column("recorded_at", time, nullable=False),
        sa.Column("window_end", time, nullable=False),
        sa.Column("opened_window", sa.Boolean(), nullable=False),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("claimed_until", time),
        sa.Column("sent_at", time),
        sa.UniqueConstraint("team", "flow_run_id", name="uq_failed_run_pages_team_run"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_failed_run_pages_team_sent", "failed_run_pages", ["team", "sent_at"])


def downgrade() -> None:
    op.drop_table("failed_run_pages")
