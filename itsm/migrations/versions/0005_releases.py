"""releases: versions of a service rolled across its hosts (itsm.releases), one row each.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    time = sa.DateTime(timezone=True)
    op.create_table(
        "releases",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("to_version", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Text()),
        sa.Column("batch", sa.String(8), nullable=False),
        sa.Column("canary", sa.Integer(), nullable=False),
        sa.Column("pause_s", sa.Float(), nullable=False),
        sa.Column("requester", sa.String(255), nullable=False),
        sa.Column("approver", sa.String(255), nullable=False),
        sa.Column("request", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("hosts", json, nullable=False),
        sa.Column("outcome", sa.Text()),
        sa.Column("rollback", sa.Text()),
        sa.Column("requested_at", time, nullable=False),
        sa.Column("started_at", time),
        sa.Column("finished_at", time),
        sa.Column("updated_at", time, nullable=False),
        sa.Column("flow_run_ids", json, nullable=False),
        sa.Column("incidents", json, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "state IN ('approved', 'rolling-out', 'deployed', 'failed', 'canceled')",
            name="ck_releases_state",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_releases_state", "releases", ["state"])
    op.create_index("ix_releases_service", "releases", ["service", "id"])


def downgrade() -> None:
    op.drop_table("releases")
