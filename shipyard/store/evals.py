"""Evaluation records: runs and their per-case results (written as each case finishes, so a run
interrupted half way resumes where it stopped), approved baselines, the cache of model answers that makes
re-running checks free, and the scores of online evaluation.

No raw PII reaches these tables: the runner stores outputs, texts, errors and check details redacted
(``content.scrub``), the cache holds redacted answers, and online rows hold verdicts only, with the
call's subject as a digest so that an erasure finds them after their trace is gone (``forget_subject``).
``purge`` is retention's side of it.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from ._schema import eval_cache, eval_online, eval_results, eval_runs
from .audit import AuditLog, digest


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}


class EvalStore:
    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = audit

    # -- runs --------------------------------------------------------------------------------------

    def create_run(self, run_id: str, *, feature: str, release: str | None, dataset: str | None, repeat: int,
                   checks: list[dict[str, Any]], dataset_digest: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(eval_runs.insert().values(
                run_id=run_id, feature=feature, release=release, dataset=dataset, dataset_digest=dataset_digest,
                repeat=repeat, status="running", started_at=time.time(), checks=checks,
            ))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(eval_runs).where(eval_runs.c.run_id == run_id)).mappings().first()
        return None if row is None else _plain(row)

    def find_run(self, prefix: str) -> dict[str, Any] | None:
        """A run by its id or an unambiguous prefix of it (ids are long to type)."""
        exact = self.get_run(prefix)
        if exact is not None:
            return exact
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(eval_runs).where(eval_runs.c.run_id.startswith(prefix, autoescape=True))
                                .limit(2)).mappings().all()
        return _plain(rows[0]) if len(rows) == 1 else None

    def list_runs(self, feature: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query = sa.select(eval_runs).order_by(eval_runs.c.started_at.desc()).limit(limit)
        if feature:
            query = query.where(eval_runs.c.feature == feature)
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query).mappings()]

    def save_result(self, run_id: str, case: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
        """One case's attempts, written as soon as they are known (replacing an earlier partial write)."""
        with self.engine.begin() as conn:
            conn.execute(eval_results.delete().where(eval_results.c.run_id == run_id,
                                                     eval_results.c.case_id == case["id"]))
            conn.execute(eval_results.insert().values(run_id=run_id, case_id=case["id"], case=case, attempts=attempts))

    def results(self, run_id: str) -> dict[str, dict[str, Any]]:
        """case id -> {case, attempts} of what the run has finished so far."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(eval_results).where(eval_results.c.run_id == run_id)).mappings()
            return {r["case_id"]: {"case": r["case"], "attempts": r["attempts"]} for r in rows}

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(eval_runs.update().where(eval_runs.c.run_id == run_id)
                         .values(status="done", finished_at=time.time(), summary=summary))

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """The run as one dict: its header, checks and every case with its attempts (the report's input)."""
        row = self.get_run(run_id)
        if row is None:
            return None
        done = self.results(row["run_id"])
        cases = [{**r["case"], "attempts": r["attempts"]} for r in done.values()]
        cases.sort(key=lambda c: c.get("order", 0))
        return {
            "run_id": row["run_id"], "feature": row["feature"], "release": row["release"],
            "dataset": row["dataset"], "dataset_digest": row["dataset_digest"], "started_at": row["started_at"], "finished_at": row["finished_at"],
            "repeat": row["repeat"], "status": row["status"], "checks": row["checks"] or [], "cases": cases,
            "approved_at": row["approved_at"],
        }

    # -- baselines ---------------------------------------------------------------------------------

    def approve(self, run_id: str, actor: str) -> dict[str, Any]:
        """Mark a finished run the approved baseline of its feature; the audit log names who, with the
        previous baseline and a digest of the new one's summary."""
        row = self.get_run(run_id)
        if row is None:
            raise KeyError(run_id)
        before = self.baseline(row["feature"])
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(eval_runs.update().where(eval_runs.c.run_id == run_id)
                         .values(approved_at=now, approved_by=actor))
        self.audit.append(
            actor, "eval.approved", row["feature"],
            {"run_id": run_id, "previous": before["run_id"] if before else None, "release": row["release"]},
            before=digest(before["summary"]) if before else None, after=digest(row["summary"]),
        )
        return {**row, "approved_at": now, "approved_by": actor}

    def baseline(self, feature: str) -> dict[str, Any] | None:
        """The feature's most recently approved run."""
        query = (sa.select(eval_runs).where(eval_runs.c.feature == feature, eval_runs.c.approved_at.is_not(None))
                 .order_by(eval_runs.c.approved_at.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _plain(row)

    # -- the answer cache --------------------------------------------------------------------------

    def cache_get(self, key: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(eval_cache.c.response).where(eval_cache.c.key == key)).first()
        return None if row is None else row[0]

    def cache_put(self, key: str, response: Any) -> None:
        """Keep ``response`` under ``key``, replacing what was there: one upsert, so two cases with the
        same input finishing together both succeed (the later answer wins)."""
        insert = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(eval_cache)
        values = {"key": key, "response": response, "created_at": time.time()}
        statement = insert.values(**values).on_conflict_do_update(
            index_elements=[eval_cache.c.key],
            set_={"response": insert.excluded.response, "created_at": insert.excluded.created_at},
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    # -- online evaluation -------------------------------------------------------------------------

    def add_online(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(eval_online.insert(), rows)

    def online(self, feature: str, since: float) -> list[dict[str, Any]]:
        query = (sa.select(eval_online).where(eval_online.c.feature == feature, eval_online.c.at >= since)
                 .order_by(eval_online.c.at))
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query).mappings()]

    # -- retention and erasure ---------------------------------------------------------------------

    def forget_subject(self, digest: str) -> int:
        """Delete the online scores of the calls about a subject, by the subject's digest
        (``content.subject_digest``); returns how many."""
        with self.engine.begin() as conn:
            return int(conn.execute(eval_online.delete().where(eval_online.c.subject == digest)).rowcount or 0)

    def purge(self, before: float) -> int:
        """Delete what is older than ``before``: online scores (``at``), cached answers (``created_at``),
        and runs with their results that finished before it, or never finished and started before it (an
        abandoned run), except each feature's approved baseline, which a gate still compares with.
        Returns the number of rows deleted, all tables together."""
        keep = self._baselines()
        old = sa.or_(eval_runs.c.finished_at < before,
                     sa.and_(eval_runs.c.finished_at.is_(None), eval_runs.c.started_at < before))
        with self.engine.begin() as conn:
            n = conn.execute(eval_online.delete().where(eval_online.c.at < before)).rowcount or 0
            n += conn.execute(eval_cache.delete().where(eval_cache.c.created_at < before)).rowcount or 0
            runs = [r[0] for r in conn.execute(sa.select(eval_runs.c.run_id).where(old)) if r[0] not in keep]
            for start in range(0, len(runs), 500):
                batch = runs[start:start + 500]
                n += conn.execute(eval_results.delete().where(eval_results.c.run_id.in_(batch))).rowcount or 0
                n += conn.execute(eval_runs.delete().where(eval_runs.c.run_id.in_(batch))).rowcount or 0
        return int(n)

    def _baselines(self) -> set[str]:
        """The run id of each feature's approved baseline (its most recently approved run)."""
        latest = (sa.select(eval_runs.c.feature, sa.func.max(eval_runs.c.approved_at).label("at"))
                  .where(eval_runs.c.approved_at.is_not(None)).group_by(eval_runs.c.feature).subquery())
        query = sa.select(eval_runs.c.run_id).join(
            latest, sa.and_(eval_runs.c.feature == latest.c.feature, eval_runs.c.approved_at == latest.c.at))
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(query)}
