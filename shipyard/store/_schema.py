"""The durable tables. Changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

traces = sa.Table(
    "traces",
    metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("feature", sa.String(128), nullable=False),
    sa.Column("op", sa.String(16), nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False, default=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("http_status", sa.Integer),
    sa.Column("route", sa.String(300)),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("total_tokens", sa.Integer),
    sa.Column("attempt_count", sa.Integer, nullable=False, default=0),
    sa.Column("events", sa.JSON),
    # 0002: who called, what it cost, whether a cache answered
    sa.Column("tenant", sa.String(128)),
    sa.Column("key_id", sa.String(32)),
    sa.Column("cost_usd", sa.Float),
    sa.Column("cost_estimated", sa.Boolean),
    sa.Column("cache", sa.String(16)),
    # 0004: retention and erasure (shipyard/store/content.py). subject: a digest of the id, never the id.
    sa.Column("subject", sa.String(40)),
    sa.Column("content", sa.Text),
    sa.Column("content_mode", sa.String(16)),
    sa.Column("severity", sa.String(16)),  # the worst guard finding of the call
    # 0007: monitoring. quality: how many data-quality problems the input had; segment: "lang=es,tier=gold"
    sa.Column("quality", sa.Integer),
    sa.Column("segment", sa.String(200)),
    sa.Index("ix_traces_started_at", "started_at"),
    sa.Index("ix_traces_feature_started_at", "feature", "started_at"),
    sa.Index("ix_traces_tenant_started_at", "tenant", "started_at"),
    sa.Index("ix_traces_subject", "subject"),
    sa.Index("ix_traces_feature_segment", "feature", "segment", "started_at"),
)

attempts = sa.Table(
    "trace_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("provider", sa.String(128), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("status_code", sa.Integer),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("offset_ms", sa.Float, nullable=False),
    sa.Index("ix_trace_attempts_trace_id", "trace_id", "seq"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("features", sa.JSON),  # null: every feature
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
    sa.Index("ix_api_keys_tenant", "tenant"),
)

# 0003: the hash-chained audit log (shipyard/store/audit.py). seq is given under the append lock, not by
# the database: it is part of what each entry's hash covers.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("details", sa.JSON),
    sa.Column("before_digest", sa.Text),
    sa.Column("after_digest", sa.Text),
    sa.Column("prev_hash", sa.CHAR(64), nullable=False),
    sa.Column("hash", sa.CHAR(64), nullable=False),
    sa.Index("ix_audit_log_at", "at"),
)

# 0005: evaluation (shipyard/store/evals.py). A run's results are written case by case as they finish, so
# an interrupted run resumes where it stopped; model answers are cached by (route config, input, repeat).
eval_runs = sa.Table(
    "eval_runs",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("feature", sa.String(128), nullable=False),
    sa.Column("release", sa.String(200)),
    sa.Column("dataset", sa.Text),
    sa.Column("dataset_digest", sa.String(64)),  # sha256 of the dataset file: --resume refuses another
    sa.Column("repeat", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running | done
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("approved_at", sa.Float),
    sa.Column("approved_by", sa.Text),
    sa.Column("checks", sa.JSON),
    sa.Column("summary", sa.JSON),
    sa.Index("ix_eval_runs_feature_started_at", "feature", "started_at"),
)

eval_results = sa.Table(
    "eval_results",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("case_id", sa.String(200), primary_key=True),
    # id, segment, severity and input_digest (not the input: it is in the dataset)
    sa.Column("case", sa.JSON, nullable=False),
    sa.Column("attempts", sa.JSON, nullable=False),  # output, text, error and check details redacted
)

eval_cache = sa.Table(
    "eval_cache",
    metadata,
    sa.Column("key", sa.CHAR(64), primary_key=True),
    sa.Column("response", sa.JSON, nullable=False),  # redacted: a replayed answer has [EMAIL], not the email
    sa.Column("created_at", sa.Float, nullable=False),
)

eval_online = sa.Table(
    "eval_online",
    metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("feature", sa.String(128), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("segment", sa.JSON),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("checks", sa.JSON, nullable=False),  # verdicts only: {passed, score, detail (redacted)}
    sa.Column("cost_usd", sa.Float),
    sa.Column("subject", sa.String(40)),  # a digest, as on traces: erasure finds rows whose trace is gone
    sa.Index("ix_eval_online_feature_at", "feature", "at"),
    sa.Index("ix_eval_online_subject", "subject"),
)

# 0006: incidents (shipyard/store/incidents.py). One open incident per feature and alert key: the partial
# unique index makes two replicas that see the same alert open it once.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("feature", sa.String(128), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),  # what alerted: slo:availability:1h/5m, guard:critical
    sa.Column("duty", sa.String(16), nullable=False),  # incidents | evaluation | risk | changes
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | acknowledged | resolved
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("details", sa.JSON),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("acked_at", sa.Float),
    sa.Column("resolved_at", sa.Float),
    sa.Index("ix_incidents_one_open", "feature", "key", unique=True,
             sqlite_where=sa.text("status != 'resolved'"), postgresql_where=sa.text("status != 'resolved'")),
    sa.Index("ix_incidents_status", "status", "opened_at"),
)

incident_events = sa.Table(
    "incident_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # opened | notified | delivery_failed | acknowledged | resolved | update
    sa.Column("detail", sa.JSON),
    sa.Index("ix_incident_events_incident", "incident_id", "at"),
)
