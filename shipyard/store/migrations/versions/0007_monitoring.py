"""Monitoring: data-quality problem counts and segments on traces

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("quality", sa.Integer))
        batch.add_column(sa.Column("segment", sa.String(200)))
    op.create_index("ix_traces_feature_segment", "traces", ["feature", "segment", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_traces_feature_segment", "traces")
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("segment")
        batch.drop_column("quality")
