"""The audit log: append-only and hash-chained, so that an edited, removed or reordered entry shows.

Each entry carries the hash of the one before it and its own hash::

    hash = sha256(prev_hash + canonical JSON of {seq, at, actor, action, target, details, before, after})

(keys sorted, no whitespace; the first entry's ``prev_hash`` is 64 zeros). ``seq`` is part of what is
hashed, so it is given under the append lock rather than by the database. Appends are serialized across
processes: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, so two writers never
read the same last hash and fork the chain.

The chain shows any change *inside* it; dropping its newest entries leaves a shorter chain that is still
intact, which only a copy kept elsewhere (``shipyard audit export``) can show. Entries never hold secrets:
a key is named by its id, tenant and role.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._schema import audit_log

__all__ = ["GENESIS", "AuditLog", "Break", "digest", "entry_hash"]

GENESIS = "0" * 64
_LOCK_KEY = 7311998  # the migration lock is 7311997
CONFIG_ACTIONS = ("config.loaded", "config.changed")


def canonical(value: Any) -> bytes:
    """The one encoding an entry is hashed in: JSON, keys sorted, no whitespace."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def digest(value: Any) -> str:
    """sha256 of a value's canonical JSON: the before/after digest of a record."""
    return hashlib.sha256(canonical(value)).hexdigest()


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    content = {
        "seq": entry["seq"],
        "at": entry["at"],
        "actor": entry["actor"],
        "action": entry["action"],
        "target": entry["target"],
        "details": entry["details"],
        "before": entry["before_digest"],
        "after": entry["after_digest"],
    }
    return hashlib.sha256(prev_hash.encode() + canonical(content)).hexdigest()


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain breaks: the first entry that was ``edited``, ``removed`` or ``reordered``."""

    seq: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"broken at entry {self.seq}: {self.reason} ({self.detail})"


class AuditLog:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        """A transaction that holds the append lock until it commits."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # pysqlite opens transactions lazily (at the first write): take the write lock before
                # reading the last hash instead, so that a second writer waits here (busy_timeout).
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def append(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """Add an entry at the end of the chain and return it (with its seq and hash)."""
        with self._locked() as conn:
            return self._append(conn, actor, action, target, details, before, after)

    def record_config(self, actor: str, config_digest: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        """``config.loaded``, or ``config.changed`` with before/after digests when the config last recorded
        differs. Decided under the append lock, so that replicas starting together agree."""
        with self._locked() as conn:
            last = conn.execute(
                sa.select(audit_log.c.after_digest)
                .where(audit_log.c.action.in_(CONFIG_ACTIONS))
                .order_by(audit_log.c.seq.desc())
                .limit(1)
            ).first()
            before = last[0] if last is not None else None
            action = "config.changed" if before is not None and before != config_digest else "config.loaded"
            return self._append(conn, actor, action, "config", details, before, config_digest)

    def record_change(
        self, actor: str, action: str, target: str, after: str | None, details: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Append ``action`` on ``target`` with digests before and after, unless the last such entry
        already ended at ``after`` (nothing changed); ``after`` None is the target removed. Decided under the append lock, so that replicas
        starting together write one entry, not one each. None when nothing changed."""
        with self._locked() as conn:
            last = conn.execute(
                sa.select(audit_log.c.after_digest)
                .where(audit_log.c.action == action, audit_log.c.target == target)
                .order_by(audit_log.c.seq.desc())
                .limit(1)
            ).first()
            before = last[0] if last is not None else None
            if (last is not None and before == after) or (last is None and after is None):
                return None  # unchanged, or absent from the start
            return self._append(conn, actor, action, target, details, before, after)

    def _append(
        self, conn: Connection, actor: str, action: str, target: str | None, details: dict[str, Any] | None,
        before: str | None, after: str | None,
    ) -> dict[str, Any]:
        last = conn.execute(
            sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
        seq, prev = (last[0] + 1, last[1]) if last is not None else (1, GENESIS)
        entry: dict[str, Any] = {
            "seq": seq,
            # microseconds: a float every store keeps exactly, so the hash reads back the same
            "at": round(self.clock(), 6),
            "actor": actor,
            "action": action,
            "target": target,
            # through JSON once, so that what is hashed is what the store gives back (tuples, key order)
            "details": orjson.loads(canonical(details or {})),
            "before_digest": before,
            "after_digest": after,
        }
        entry["prev_hash"] = prev
        entry["hash"] = entry_hash(prev, entry)
        conn.execute(audit_log.insert().values(**entry))
        return entry

    def entries(self, *, since: float | None = None, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Entries in chain order, those at or after ``since`` when given.

        Read a page at a time by seq, with no cursor held between pages: a caller may stop early."""
        after = None
        while True:
            query = sa.select(audit_log).order_by(audit_log.c.seq).limit(page)
            if since is not None:
                query = query.where(audit_log.c.at >= since)
            if after is not None:
                query = query.where(audit_log.c.seq > after)
            with self.engine.connect() as conn:
                rows = [{str(k): v for k, v in r.items()} for r in conn.execute(query).mappings()]
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["seq"]

    def export(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """The entries for ``shipyard audit export``: each as a dict with its hashes, to check elsewhere."""
        return self.entries(since=since)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())

    def verify(self) -> Break | None:
        """Walk the chain; the first entry that breaks it, or None if it is intact.

        An entry whose content no longer gives its hash was ``edited``; a gap in the seqs, or a prev_hash
        that is no entry's hash, means entries were ``removed``; a prev_hash that is another entry's hash
        means entries were ``reordered``. An entry edited and re-hashed leaves the next entry's prev_hash
        pointing at nothing: that names the re-hashed one as edited."""
        expected_seq, expected_prev = 1, GENESIS
        for entry in self.entries():
            seq = entry["seq"]
            if seq != expected_seq:
                gone = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
                return Break(expected_seq, "removed", f"entries {gone} missing before entry {seq}")
            hash_ok = entry_hash(entry["prev_hash"], entry) == entry["hash"]
            if entry["prev_hash"] != expected_prev:
                with self.engine.connect() as conn:
                    owner = conn.execute(
                        sa.select(audit_log.c.seq).where(audit_log.c.hash == entry["prev_hash"]).limit(1)
                    ).scalar()
                if owner is not None:
                    return Break(seq, "reordered", f"it follows entry {owner}, not entry {seq - 1}")
                if hash_ok and seq > 1:
                    return Break(seq - 1, "edited", f"entry {seq} was chained to different content")
                return Break(seq, "removed", f"the entry it was chained to (before {seq}) is gone")
            if not hash_ok:
                return Break(seq, "edited", "its content does not match its hash")
            expected_seq, expected_prev = seq + 1, entry["hash"]
        return None
