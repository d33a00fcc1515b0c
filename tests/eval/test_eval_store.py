"""The evaluation tables on SQLite and PostgreSQL: the cache upsert, retention's purge (keeping each
feature's approved baseline), erasure by subject digest, and the migration matching the schema."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from shipyard.store import Store
from shipyard.store._schema import eval_cache, eval_online, eval_results, eval_runs, metadata
from shipyard.store.content import subject_digest
from tests.store.test_store import postgres_url, store_url  # noqa: F401 - fixtures, run on both stores


def opened(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


def run(store: Store, run_id: str, feature: str, *, started: float, finished: float | None,
        approved: float | None = None) -> None:
    store.evals.create_run(run_id, feature=feature, release=None, dataset=None, repeat=1, checks=[])
    store.evals.save_result(run_id, {"id": "c0"}, [{"output": None, "checks": {}}])
    with store.engine.begin() as conn:
        conn.execute(eval_runs.update().where(eval_runs.c.run_id == run_id).values(
            started_at=started, finished_at=finished, approved_at=approved,
            status="done" if finished is not None else "running"))


def online_row(trace_id: str, feature: str, at: float, subject: str | None) -> dict:
    return {"trace_id": trace_id, "feature": feature, "at": at, "segment": {}, "passed": True, "score": 1.0,
            "checks": {}, "cost_usd": None, "subject": subject}


def test_the_cache_put_replaces_what_the_key_held(store_url):  # noqa: F811
    store = opened(store_url)
    key = uuid.uuid4().hex + uuid.uuid4().hex
    store.evals.cache_put(key, {"completion": "first"})
    store.evals.cache_put(key, {"completion": "second"})
    assert store.evals.cache_get(key) == {"completion": "second"}
    store.close()


def test_purge_deletes_what_is_old_except_each_features_approved_baseline(store_url):  # noqa: F811
    store = opened(store_url)
    tag = uuid.uuid4().hex[:8]
    f, g = f"f-{tag}", f"g-{tag}"
    run(store, f"{tag}-base", f, started=90, finished=100, approved=150)  # f's baseline: kept, however old
    run(store, f"{tag}-prev", f, started=80, finished=90, approved=120)  # a baseline no longer: goes
    run(store, f"{tag}-plain", f, started=70, finished=80)
    run(store, f"{tag}-abandoned", f, started=50, finished=None)  # interrupted long ago, never resumed
    run(store, f"{tag}-new", f, started=900, finished=1000)
    run(store, f"{tag}-resumable", f, started=900, finished=None)
    run(store, f"{tag}-g-base", g, started=90, finished=100, approved=110)
    old_key, new_key = f"{tag}old".ljust(64, "0"), f"{tag}new".ljust(64, "0")
    store.evals.cache_put(old_key, {"completion": "old"})
    store.evals.cache_put(new_key, {"completion": "new"})
    with store.engine.begin() as conn:
        conn.execute(eval_cache.update().where(eval_cache.c.key == old_key).values(created_at=100))
        conn.execute(eval_cache.update().where(eval_cache.c.key == new_key).values(created_at=1000))
    store.evals.add_online([online_row(f"{tag}a".ljust(32, "0"), f, 100, None),
                            online_row(f"{tag}b".ljust(32, "0"), f, 1000, None)])

    assert store.evals.purge(before=500) == 1 + 1 + 3 * 2  # an online row, a cached answer, 3 runs and results

    with store.engine.connect() as conn:
        runs = {r[0] for r in conn.execute(sa.select(eval_runs.c.run_id).where(eval_runs.c.run_id.startswith(tag)))}
        results = {r[0] for r in conn.execute(sa.select(eval_results.c.run_id)
                                              .where(eval_results.c.run_id.startswith(tag)))}
        keys = {r[0] for r in conn.execute(sa.select(eval_cache.c.key).where(eval_cache.c.key.startswith(tag)))}
    assert runs == results == {f"{tag}-base", f"{tag}-new", f"{tag}-resumable", f"{tag}-g-base"}
    assert keys == {new_key}
    assert [r["trace_id"][:9] for r in store.evals.online(f, 0)] == [f"{tag}b"]
    assert store.evals.baseline(f)["run_id"] == f"{tag}-base"
    store.close()


def test_forget_subject_deletes_the_online_scores_about_them(store_url):  # noqa: F811
    store = opened(store_url)
    tag = uuid.uuid4().hex[:8]
    feature, ana, bob = f"f-{tag}", subject_digest(f"ana-{tag}"), subject_digest(f"bob-{tag}")
    store.evals.add_online([online_row(f"{tag}{i}".ljust(32, "0"), feature, 100.0 + i, s)
                            for i, s in enumerate([ana, ana, bob, None])])
    assert store.evals.forget_subject(ana) == 2
    assert store.evals.forget_subject(ana) == 0
    assert sorted(r["subject"] or "" for r in store.evals.online(feature, 0)) == ["", bob]
    store.close()


def test_the_migration_makes_the_eval_tables_the_schema_describes(tmp_path):
    store = opened(f"sqlite:///{tmp_path}/s.db")
    inspector = sa.inspect(store.engine)
    for table in (eval_runs, eval_results, eval_cache, eval_online):
        assert {c["name"] for c in inspector.get_columns(table.name)} == {c.name for c in table.columns}
        assert {i["name"] for i in inspector.get_indexes(table.name)} == {i.name for i in table.indexes}
    assert metadata.tables["eval_online"].c.subject.type.length == 40
    store.close()
