"""An index for the per-token quotas: every submit counts the token's active studies and those of the last
day, which without it scans the whole studies table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 02:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_studies_token_created", "studies", ["token_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_studies_token_created", table_name="studies")
