"""The records schema of commit 2a3d754, where migrations start.

A database made before migrations keeps the tables it has (checked against the frozen
schema first); only the ones it lacks are made.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from opsflow.itsm.migrations import premigration

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    premigration.create_missing(op.get_bind(), premigration.AT_2A3D754)


def downgrade() -> None:
    premigration.drop(op.get_bind(), premigration.AT_2A3D754)
