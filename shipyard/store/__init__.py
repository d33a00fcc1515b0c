"""Durable records: SQLite by default, PostgreSQL for many replicas. Schema changes are Alembic migrations.

The store is synchronous (SQLAlchemy Core): the request path never calls it. Traces reach it through
:class:`TraceWriter`, which batches them off the event loop; reads for the CLI and the admin API run in a
worker thread.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from ..errors import ConfigError
from ._schema import api_keys, attempts, metadata, traces
from .audit import AuditLog
from .writer import TraceWriter

__all__ = ["AuditLog", "Store", "TraceWriter", "metadata"]

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """An engine for a ``sqlite:///`` or ``postgresql://`` URL, with the settings each needs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                [("<config>", None, "storage", "PostgreSQL storage needs psycopg: pip install 'shipyard[postgres]'")]
            ) from None
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    raise ConfigError([("<config>", None, "storage", f"unsupported storage URL {url!r}")])


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; safe from several processes on PostgreSQL)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        # One migrator at a time: alembic's loading is not thread-safe, and two processes starting
        # together must not both create the tables. PostgreSQL: an advisory lock; SQLite: a lock file.
        with _MIGRATE_LOCK, self._file_lock(), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7311997)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            yield
            return
        # The lock file lives in the temp folder, keyed by the database's absolute path, so that nothing
        # is left beside the user's database.
        key = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:24]
        with open(Path(tempfile.gettempdir()) / f"shipyard-migrate-{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @functools.cached_property
    def audit(self) -> AuditLog:
        """The hash-chained audit log in this storage."""
        return AuditLog(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

    # -- traces ------------------------------------------------------------------------------------

    def insert_traces(self, records: Iterable[dict[str, Any]]) -> int:
        """Write a batch of trace records (and their attempts) in one transaction.

        The rows go to the driver's executemany as plain tuples: SQLAlchemy's per-row parameter
        processing cost more than the insert itself (~15% of the gateway's CPU per call, py-spy)."""
        trace_rows: list[tuple[Any, ...]] = []
        attempt_rows: list[tuple[Any, ...]] = []
        dumps = orjson.dumps
        for rec in records:
            calls = rec.get("attempts") or ()
            trace_rows.append(
                (*[_clean(rec.get(c)) for c in _TRACE_PLAIN], _clean(dumps(rec.get("events") or []).decode()), len(calls))
            )
            trace_id = rec["trace_id"]
            for seq, att in enumerate(calls):
                attempt_rows.append((trace_id, seq, *[_clean(att.get(c)) for c in _ATTEMPT_PLAIN]))
        if not trace_rows:
            return 0
        trace_sql, attempt_sql = self._insert_sql
        with self.engine.begin() as conn:
            conn.exec_driver_sql(trace_sql, trace_rows)
            if attempt_rows:
                conn.exec_driver_sql(attempt_sql, attempt_rows)
        return len(trace_rows)

    @functools.cached_property
    def _insert_sql(self) -> tuple[str, str]:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

        def insert(table: str, columns: list[str]) -> str:
            return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"

        return (
            insert("traces", [*_TRACE_PLAIN, "events", "attempt_count"]),
            insert("trace_attempts", ["trace_id", "seq", *_ATTEMPT_PLAIN]),
        )

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(traces).where(traces.c.trace_id == trace_id)).mappings().first()
            if row is None:
                return None
            atts = conn.execute(
                sa.select(attempts).where(attempts.c.trace_id == trace_id).order_by(attempts.c.seq)
            ).mappings()
            out = _plain(row)
            out["attempts"] = [_plain(a, skip=("id", "trace_id")) for a in atts]
        return out

    def list_traces(self, *, feature: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query = sa.select(traces).order_by(traces.c.started_at.desc()).limit(limit)
        if feature:
            query = query.where(traces.c.feature == feature)
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query).mappings()]

    def count_traces(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(traces)).scalar_one())

    COST_GROUPS = ("feature", "tenant", "key", "model")

    def cost_totals(self, *, by: str = "feature", since: float | None = None) -> list[dict[str, Any]]:
        """Calls, tokens and USD per feature, tenant, key or model (the route that served), largest first.

        ``estimated`` counts calls whose cost is partly an estimate; ``unpriced`` counts calls that used
        tokens on a route with no price, so that their group's USD reads as a lower bound, not as free."""
        column = {"feature": traces.c.feature, "tenant": traces.c.tenant, "key": traces.c.key_id,
                  "model": traces.c.route}[by]
        estimated = sa.func.sum(sa.case((traces.c.cost_estimated.is_(True), 1), else_=0))
        unpriced = sa.func.sum(
            sa.case((sa.and_(traces.c.cost_usd.is_(None), traces.c.total_tokens > 0), 1), else_=0)
        )
        query = (
            sa.select(
                column.label("group"),
                sa.func.count().label("calls"),
                sa.func.coalesce(sa.func.sum(traces.c.prompt_tokens), 0).label("prompt_tokens"),
                sa.func.coalesce(sa.func.sum(traces.c.completion_tokens), 0).label("completion_tokens"),
                sa.func.coalesce(sa.func.sum(traces.c.cost_usd), 0.0).label("cost_usd"),
                estimated.label("estimated"),
                unpriced.label("unpriced"),
                sa.func.sum(sa.case((traces.c.cache.is_not(None), 1), else_=0)).label("cache_hits"),
            )
            .group_by(column)
            .order_by(sa.desc("cost_usd"))
        )
        if since is not None:
            query = query.where(traces.c.started_at >= since)
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query).mappings()]

    # -- API keys ----------------------------------------------------------------------------------

    def insert_key(self, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
        return None if row is None else _plain(row)

    def list_keys(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if tenant:
            query = query.where(api_keys.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_plain(r, skip=("salt", "secret_hash")) for r in conn.execute(query).mappings()]

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Mark a key revoked; False if there is no such key (revoking twice keeps the first time)."""
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(api_keys.c.key_id).where(api_keys.c.key_id == key_id)).first()
            if found is None:
                return False
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return True


def _clean(value: Any) -> Any:
    """Text as every store takes it: PostgreSQL refuses NUL characters (an upstream may send them)."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _plain(row: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A result row as a dict with plain ``str`` keys (SQLAlchemy's are a str subclass)."""
    return {str(k): v for k, v in row.items() if k not in skip}


_TRACE_PLAIN = [c.name for c in traces.columns if c.name not in ("events", "attempt_count")]
_ATTEMPT_PLAIN = [c.name for c in attempts.columns if c.name not in ("id", "trace_id", "seq")]
