"""Durable records: SQLite by default, PostgreSQL for many replicas. Schema changes are Alembic migrations.

The store is synchronous (SQLAlchemy Core): the request path never calls it. Traces reach it through
:class:`TraceWriter`, which batches them off the event loop; reads for the CLI and the admin API run in a
worker thread.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
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
from ._schema import api_keys, attempts, eval_online, metadata, traces
from .audit import AuditLog
from .content import Sealer, scrub, subject_digest
from .evals import EvalStore
from .incidents import IncidentStore
from .writer import TraceWriter

__all__ = ["AuditLog", "Store", "TraceWriter", "metadata"]

MIGRATIONS = Path(__file__).parent / "migrations"
_REDACTING = Sealer()  # redacted content needs no key
log = logging.getLogger("shipyard.store")
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
            # Deleted rows (a purge, an erasure) are overwritten with zeros, not left in free pages.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        return engine
    raise ConfigError([("<config>", None, "storage", f"unsupported storage URL {url!r}")])


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)
        self.sealers: dict[str, Sealer] = {}
        """Content keys by environment variable name (see ``content_sealer``)."""
        self._key_envs: dict[str, str] = {}
        self._seal_warned = False
        """Each feature's key variable, when not the default (the gateway and the CLI tell it)."""

    def use_key_envs(self, by_feature: dict[str, str]) -> None:
        self._key_envs = dict(by_feature)

    def content_sealer(self, env: str, *, required: bool = False) -> Sealer:
        """The Sealer of the keys in ``env``, read once; ``required``: ContentKeyError if none is set."""
        sealer = self.sealers.get(env)
        if sealer is None or (required and sealer.current is None):
            sealer = self.sealers[env] = Sealer.from_env(env, required=required)
        return sealer

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

    @functools.cached_property
    def incidents(self) -> IncidentStore:
        """Incidents, their timelines, and the window counts alerts are computed from."""
        return IncidentStore(self.engine)

    @functools.cached_property
    def evals(self) -> EvalStore:
        """Evaluation runs, baselines, the answer cache and online scores in this storage."""
        return EvalStore(self.engine, self.audit)

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
            trace_id = rec["trace_id"]
            row = self._sealed(rec)
            trace_rows.append(
                (*[_clean(row.get(c)) for c in _TRACE_PLAIN], _clean(dumps(row.get("events") or []).decode()), len(calls))
            )
            for seq, att in enumerate(calls):
                if att.get("error_message"):
                    att = {**att, "error_message": scrub(att["error_message"])}
                attempt_rows.append((trace_id, seq, *[_clean(att.get(c)) for c in _ATTEMPT_PLAIN]))
        if not trace_rows:
            return 0
        trace_sql, attempt_sql = self._insert_sql
        with self.engine.begin() as conn:
            conn.exec_driver_sql(trace_sql, trace_rows)
            if attempt_rows:
                conn.exec_driver_sql(attempt_sql, attempt_rows)
        return len(trace_rows)

    def _sealed(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A record as it may reach disk: content sealed by its feature's ``store_content``, the subject
        id as a digest, and the free text of errors and events redacted (they may quote a request)."""
        mode = rec.get("content_mode") or "none"
        content = rec.get("content")
        row = {**rec, "content_mode": mode if content is not None else None, "content": None}
        if content is not None and mode != "none":
            try:
                sealer = (self.content_sealer(rec.get("content_key_env") or "SHIPYARD_CONTENT_KEY", required=True)
                          if mode == "encrypted" else _REDACTING)
                row["content"] = sealer.seal(content, mode, rec["trace_id"])
            except Exception as exc:  # noqa: BLE001 - the trace is kept, without its content
                row["content"], row["content_mode"] = None, None
                if not self._seal_warned:
                    self._seal_warned = True
                    log.error("a trace's content could not be sealed (%s); traces are kept without it", exc)
        elif mode == "none":
            row["content_mode"] = None
        if rec.get("subject") is not None:
            row["subject"] = subject_digest(str(rec["subject"]))
        if rec.get("error_message"):
            row["error_message"] = scrub(rec["error_message"])
        if rec.get("events"):
            row["events"] = scrub(rec["events"])
            quality = sum(len(e.get("problems") or ()) for e in rec["events"] if e.get("kind") == "quality")
            row["quality"] = quality or None
        return row

    @functools.cached_property
    def _insert_sql(self) -> tuple[str, str]:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

        def insert(table: str, columns: list[str]) -> str:
            return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"

        return (
            insert("traces", [*_TRACE_PLAIN, "events", "attempt_count"]),
            insert("trace_attempts", ["trace_id", "seq", *_ATTEMPT_PLAIN]),
        )

    def get_trace(self, trace_id: str, *, decrypt: bool = False) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(traces).where(traces.c.trace_id == trace_id)).mappings().first()
            if row is None:
                return None
            atts = conn.execute(
                sa.select(attempts).where(attempts.c.trace_id == trace_id).order_by(attempts.c.seq)
            ).mappings()
            out = _plain(row)
            out["attempts"] = [_plain(a, skip=("id", "trace_id")) for a in atts]
        out["content"] = self.open_content(out, decrypt=decrypt)
        return out

    def open_content(self, trace: dict[str, Any], *, decrypt: bool = False) -> Any:
        """A trace's stored content: redacted content as stored; encrypted content as a marker naming its
        key, or (``decrypt``) decrypted with the keys in the feature's key variable."""
        stored = trace.get("content")
        if not Sealer.is_sealed(stored):
            return Sealer().open(stored, trace["trace_id"])
        if not decrypt:
            return {"encrypted": True, "key_id": stored.split(":", 2)[1]}
        env = self._key_envs.get(trace["feature"], "SHIPYARD_CONTENT_KEY")
        return self.content_sealer(env, required=True).open(stored, trace["trace_id"])

    def list_traces(self, *, feature: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query = sa.select(traces).order_by(traces.c.started_at.desc()).limit(limit)
        if feature:
            query = query.where(traces.c.feature == feature)
        with self.engine.connect() as conn:
            return [_plain(r, skip=("content",)) for r in conn.execute(query).mappings()]

    def traces_with_content(self, *, feature: str, since: float, status: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]:
        """Recent traces of a feature with their stored content opened (redacted content as stored;
        encrypted content stays sealed): what ``shipyard eval dataset add --from-traces`` reads."""
        # Production traffic only: an evaluation's own calls (tenant "eval") are not new cases.
        query = (sa.select(traces).where(traces.c.feature == feature, traces.c.started_at >= since,
                                         traces.c.content.is_not(None),
                                         sa.or_(traces.c.tenant.is_(None), traces.c.tenant != "eval"))
                 .order_by(traces.c.started_at.desc()).limit(limit))
        if status:
            query = query.where(traces.c.status == status)
        with self.engine.connect() as conn:
            rows = [_plain(r) for r in conn.execute(query).mappings()]
        for row in rows:
            if not Sealer.is_sealed(row["content"]):
                row["content"] = self.open_content(row)
        return rows

    TRAFFIC_COLUMNS = ("trace_id", "op", "status", "error_type", "route", "started_at", "events", "segment",
                       "content")

    def traffic(self, *, feature: str, since: float, until: float | None = None,
                limit: int = 100_000) -> list[dict[str, Any]]:
        """A feature's production calls in ``[since, until)``, newest first, with or without stored content
        (opened when redacted; encrypted content stays sealed), each with ``eval_score``: its online
        evaluation score when the call was sampled, else None. What drift reads: the inputs need content,
        the outcomes (status, fallback, refusal, score) do not."""
        cols = [traces.c[name] for name in self.TRAFFIC_COLUMNS]
        query = (sa.select(*cols, eval_online.c.score.label("eval_score"))
                 .select_from(traces.outerjoin(eval_online, eval_online.c.trace_id == traces.c.trace_id))
                 .where(traces.c.feature == feature, traces.c.started_at >= since,
                        sa.or_(traces.c.tenant.is_(None), traces.c.tenant != "eval"))
                 .order_by(traces.c.started_at.desc()).limit(limit))
        if until is not None:
            query = query.where(traces.c.started_at < until)
        with self.engine.connect() as conn:
            rows = [_plain(r) for r in conn.execute(query).mappings()]
        for row in rows:
            if row["content"] is not None and not Sealer.is_sealed(row["content"]):
                row["content"] = self.open_content(row)
        return rows

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

    # -- retention and erasure ---------------------------------------------------------------------

    def purge(self, cutoffs: dict[str, float], default_cutoff: float | None) -> dict[str, int]:
        """Delete the traces (and their attempts) that started before their feature's cutoff; features
        not named in ``cutoffs`` (removed from the config since) use ``default_cutoff`` (None: keep).
        Deletes in batches, so that a large purge never holds the write lock for long. Returns the
        number of traces deleted per feature."""
        deleted: dict[str, int] = {}
        for feature, cutoff in cutoffs.items():
            n = self._delete_where(sa.and_(traces.c.feature == feature, traces.c.started_at < cutoff))
            if n:
                deleted[feature] = n
        if default_cutoff is not None:
            others = sa.and_(traces.c.feature.not_in(list(cutoffs)) if cutoffs else sa.true(),
                             traces.c.started_at < default_cutoff)
            with self.engine.connect() as conn:
                names = [r[0] for r in conn.execute(sa.select(traces.c.feature).where(others).distinct())]
            for feature in names:
                n = self._delete_where(sa.and_(traces.c.feature == feature, traces.c.started_at < default_cutoff))
                if n:
                    deleted[feature] = n
        if deleted:
            self._reclaim()
        return deleted

    def forget(self, subject: str) -> int:
        """Erase every trace about ``subject`` (the id as the client sent it). Returns how many."""
        n = self._delete_where(traces.c.subject == subject_digest(subject))
        self._reclaim()
        return n

    def count_subject(self, subject: str) -> int:
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(traces).where(traces.c.subject == subject_digest(subject))
            return int(conn.execute(query).scalar_one())

    def _delete_where(self, condition: Any, batch: int = 5000) -> int:
        total = 0
        while True:
            with self.engine.begin() as conn:
                ids = [r[0] for r in conn.execute(sa.select(traces.c.trace_id).where(condition).limit(batch))]
                if not ids:
                    return total
                conn.execute(attempts.delete().where(attempts.c.trace_id.in_(ids)))
                conn.execute(eval_online.delete().where(eval_online.c.trace_id.in_(ids)))
                conn.execute(traces.delete().where(traces.c.trace_id.in_(ids)))
            total += len(ids)

    def _reclaim(self) -> None:
        """Make deleted rows unreadable from the files too: SQLite zeroes them (secure_delete) and its
        write-ahead log is folded in and truncated; PostgreSQL's dead tuples are vacuumed away."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        elif self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in ("trace_attempts", "eval_online", "eval_cache", "eval_results", "traces"):
                    conn.exec_driver_sql(f"VACUUM {table}")

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
