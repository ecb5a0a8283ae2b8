"""Failed events (event_failures) and everyone who reported an incident (incident_reports).

Added to the code after 2a3d754 and before migrations; a database made by d71d4a3 already
has them, so only missing ones are made.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from opsflow.itsm.migrations import premigration

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    premigration.create_missing(op.get_bind(), premigration.ADDED_AFTER_2A3D754)


def downgrade() -> None:
    premigration.drop(op.get_bind(), premigration.ADDED_AFTER_2A3D754)
