"""API keys; tenant, key, cost and cache columns on traces

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("tenant", sa.String(128)))
        batch.add_column(sa.Column("key_id", sa.String(32)))
        batch.add_column(sa.Column("cost_usd", sa.Float))
        batch.add_column(sa.Column("cost_estimated", sa.Boolean))
        batch.add_column(sa.Column("cache", sa.String(16)))
    op.create_index("ix_traces_tenant_started_at", "traces", ["tenant", "started_at"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("features", sa.JSON),
        sa.Column("name", sa.String(200)),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("usd_per_day", sa.Float),
        sa.Column("usd_per_month", sa.Float),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_traces_tenant_started_at", "traces")
    with op.batch_alter_table("traces") as batch:
        for column in ("cache", "cost_estimated", "cost_usd", "key_id", "tenant"):
            batch.drop_column(column)
