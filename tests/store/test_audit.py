"""The hash-chained audit log on SQLite and on a real PostgreSQL: append, verify, tamper, concurrency."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import threading

import orjson
import pytest
import sqlalchemy as sa

from shipyard.access import KeyRing
from shipyard.store import Store
from shipyard.store.audit import GENESIS, AuditLog, entry_hash
from tests.store.test_store import postgres_url, store_url  # noqa: F401 - fixtures, run on both stores


@pytest.fixture
def store(store_url):  # noqa: F811
    s = Store(store_url)
    s.migrate()
    with s.engine.begin() as conn:  # the PostgreSQL database is one per session: each test starts a new chain
        conn.execute(sa.text("DELETE FROM audit_log"))
    yield s
    s.close()


def fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append("cli:ana", "key.created", f"k{i}", {"tenant": "acme", "n": i, "ratio": 0.1 * i, "tags": ["a", "é"]},
                   after=f"{i:064x}")


def test_entries_chain_and_verify(store):
    log = store.audit
    assert log.verify() is None and log.count() == 0
    fill(log)
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]
    # the documented formula, computed independently
    e = entries[2]
    content = {"seq": 3, "at": e["at"], "actor": "cli:ana", "action": "key.created", "target": "k2",
               "details": e["details"], "before": None, "after": f"{2:064x}"}
    encoded = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    assert b" " not in encoded.replace(b'"cli:ana"', b"")
    assert e["hash"] == hashlib.sha256(e["prev_hash"].encode() + encoded).hexdigest()
    assert log.verify() is None and log.count() == 5
    # another process's view of the same store agrees
    other = Store(store.url)
    assert other.audit.verify() is None
    other.close()


def raw(store: Store, sql: str, **params) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_an_edited_entry_is_named(store):
    fill(store.audit)
    raw(store, "UPDATE audit_log SET details = :d WHERE seq = 3", d='{"tenant": "evil"}')
    broken = store.audit.verify()
    assert (broken.seq, broken.reason) == (3, "edited")
    assert str(broken).startswith("broken at entry 3: edited")


def test_an_edited_and_rehashed_entry_is_named(store):
    fill(store.audit)
    row = next(e for e in store.audit.entries() if e["seq"] == 2)
    row["actor"] = "someone-else"
    raw(store, "UPDATE audit_log SET actor = :a, hash = :h WHERE seq = 2",
        a="someone-else", h=entry_hash(row["prev_hash"], row))
    broken = store.audit.verify()
    assert (broken.seq, broken.reason) == (2, "edited")


def test_a_removed_entry_is_named(store):
    fill(store.audit)
    raw(store, "DELETE FROM audit_log WHERE seq = 3")
    broken = store.audit.verify()
    assert (broken.seq, broken.reason) == (3, "removed")
    raw(store, "DELETE FROM audit_log WHERE seq = 1")
    assert (store.audit.verify().seq, store.audit.verify().reason) == (1, "removed")


def test_a_removed_entry_is_named_even_when_the_rest_is_renumbered(store):
    fill(store.audit)
    raw(store, "DELETE FROM audit_log WHERE seq = 3")
    for seq in (4, 5):
        raw(store, "UPDATE audit_log SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    broken = store.audit.verify()
    assert (broken.seq, broken.reason) == (3, "removed")


COLUMNS = ("at", "actor", "action", "target", "details", "before_digest", "after_digest", "prev_hash", "hash")


def test_swapped_entries_are_named_as_reordered(store):
    fill(store.audit)
    with store.engine.begin() as conn:
        rows = {r.seq: r for r in conn.execute(sa.text("SELECT * FROM audit_log WHERE seq IN (2, 4)"))}
        for seq, other in ((2, 4), (4, 2)):
            values = {c: getattr(rows[other], c) for c in COLUMNS}
            values["details"] = orjson.dumps(values["details"]).decode() if not isinstance(
                values["details"], str) else values["details"]
            sets = ", ".join(f"{c} = :{c}" for c in COLUMNS)
            conn.execute(sa.text(f"UPDATE audit_log SET {sets} WHERE seq = :seq"), {**values, "seq": seq})
    broken = store.audit.verify()
    assert (broken.seq, broken.reason) == (2, "reordered")
    assert "follows entry 3" in broken.detail


def test_renumbered_entries_are_detected(store):
    fill(store.audit)
    raw(store, "UPDATE audit_log SET seq = 100 WHERE seq = 2")
    raw(store, "UPDATE audit_log SET seq = 2 WHERE seq = 3")
    raw(store, "UPDATE audit_log SET seq = 3 WHERE seq = 100")
    broken = store.audit.verify()
    assert broken is not None and broken.seq == 2 and broken.reason in ("reordered", "edited")


def test_export_since_and_no_secrets(store):
    now = [1_000.0]
    log = AuditLog(store.engine, clock=lambda: now[0])
    for t in (1_000.0, 2_000.0, 3_000.0):
        now[0] = t
        log.append("cli:ana", "policy.changed", "feature:triage", {"t": t})
    assert [e["details"]["t"] for e in log.export(since=2_000.0)] == [2_000.0, 3_000.0]
    assert list(log.export(since=3_000.5)) == []
    key, row = KeyRing(store).create("acme", role="owner", actor="cli:ana")
    KeyRing(store).revoke(row["key_id"], actor="key:admin1")
    secret = key.split("_", 2)[2]
    entries = list(store.audit.export())
    dumped = orjson.dumps(entries).decode()
    assert secret not in dumped and row["salt"] not in dumped and row["secret_hash"] not in dumped
    created, revoked = entries[-2:]
    assert (created["actor"], created["action"], created["target"]) == ("cli:ana", "key.created", row["key_id"])
    assert created["details"] == {"tenant": "acme", "role": "owner"} and created["after_digest"]
    assert (revoked["actor"], revoked["action"]) == ("key:admin1", "key.revoked")
    assert revoked["before_digest"] == created["after_digest"] != revoked["after_digest"]
    assert not KeyRing(store).revoke("nosuchkey")
    assert store.audit.count() == 5 and store.audit.verify() is None


def test_concurrent_appends_from_threads_keep_one_chain(store):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        log = AuditLog(store.engine)
        try:
            for i in range(15):
                log.append(f"t{n}", "admin.action", None, {"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.audit.count() == 90 and store.audit.verify() is None


def _process_writer(url: str, n: int) -> None:
    s = Store(url)
    for i in range(20):
        s.audit.append(f"p{n}", "admin.action", None, {"i": i})
    s.close()


def test_concurrent_appends_from_processes_keep_one_chain(store):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(store.url, n)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert store.audit.count() == 60 and store.audit.verify() is None


def test_config_loaded_then_changed(store):
    log = store.audit
    assert log.record_config("gw", "a" * 64)["action"] == "config.loaded"
    same = log.record_config("gw", "a" * 64)
    assert (same["action"], same["before_digest"], same["after_digest"]) == ("config.loaded", "a" * 64, "a" * 64)
    log.append("cli:ana", "key.created", "k1")
    changed = log.record_config("gw", "b" * 64)
    assert (changed["action"], changed["before_digest"], changed["after_digest"]) == (
        "config.changed", "a" * 64, "b" * 64)
    assert log.verify() is None
