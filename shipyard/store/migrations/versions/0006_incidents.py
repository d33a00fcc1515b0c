"""Incidents and their timelines

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("duty", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("acked_at", sa.Float),
        sa.Column("resolved_at", sa.Float),
    )
    op.create_index("ix_incidents_one_open", "incidents", ["feature", "key"], unique=True,
                    sqlite_where=sa.text("status != 'resolved'"), postgresql_where=sa.text("status != 'resolved'"))
    op.create_index("ix_incidents_status", "incidents", ["status", "opened_at"])
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_incident_events_incident", "incident_events", ["incident_id", "at"])


def downgrade() -> None:
    op.drop_table("incident_events")
    op.drop_table("incidents")
