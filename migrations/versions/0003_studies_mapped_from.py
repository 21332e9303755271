"""Studies remember the training config they were mapped from (advisor.training_configs): what was carried
over, and the real run's batch layout that the answer's write-back needs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 15:30:00
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
    json_type = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("mapped_from", json_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("mapped_from")
