"""Evaluation: runs, their per-case results, the cache of model answers, online scores

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("release", sa.String(200)),
        sa.Column("dataset", sa.Text),
        sa.Column("dataset_digest", sa.String(64)),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("approved_at", sa.Float),
        sa.Column("approved_by", sa.Text),
        sa.Column("checks", sa.JSON),
        sa.Column("summary", sa.JSON),
    )
    op.create_index("ix_eval_runs_feature_started_at", "eval_runs", ["feature", "started_at"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("case_id", sa.String(200), primary_key=True),
        sa.Column("case", sa.JSON, nullable=False),
        sa.Column("attempts", sa.JSON, nullable=False),
    )
    op.create_table(
        "eval_cache",
        sa.Column("key", sa.CHAR(64), primary_key=True),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "eval_online",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("feature", sa.String(128), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("segment", sa.JSON),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("checks", sa.JSON, nullable=False),
        sa.Column("cost_usd", sa.Float),
        sa.Column("subject", sa.String(40)),
    )
    op.create_index("ix_eval_online_feature_at", "eval_online", ["feature", "at"])
    op.create_index("ix_eval_online_subject", "eval_online", ["subject"])


def downgrade() -> None:
    for table in ("eval_online", "eval_cache", "eval_results", "eval_runs"):
        op.drop_table(table)
