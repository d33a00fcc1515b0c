"""Retention and erasure: the subject a trace is about, its stored content, its worst guard finding

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("subject", sa.String(40)))
        batch.add_column(sa.Column("content", sa.Text))
        batch.add_column(sa.Column("content_mode", sa.String(16)))
        batch.add_column(sa.Column("severity", sa.String(16)))
    op.create_index("ix_traces_subject", "traces", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_traces_subject", "traces")
    with op.batch_alter_table("traces") as batch:
        for column in ("severity", "content_mode", "content", "subject"):
            batch.drop_column(column)
