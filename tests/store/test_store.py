"""Durable traces on SQLite and on a real PostgreSQL (SHIPYARD_TEST_POSTGRES_URL)."""

from __future__ import annotations

import asyncio
import os
import textwrap
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from shipyard.store import Store, TraceWriter
from tests.conftest import POSTGRES_URL, two_route_config
from tests.fakes import Fail, Reply


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set SHIPYARD_TEST_POSTGRES_URL: the storage tests run on PostgreSQL too")
        pytest.skip("SHIPYARD_TEST_POSTGRES_URL is not set (CI sets it; .ci/run shows how)")
    name = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("postgres_url")


def record(i: int, feature: str = "f", attempts: int = 1) -> dict:
    return {
        "trace_id": f"{i:032x}",
        "feature": feature,
        "op": "chat",
        "stream": False,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "http_status": 200,
        "route": "p/m",
        "started_at": 1_700_000_000.0 + i,
        "latency_ms": 12.5,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "attempts": [
            {"provider": "p", "model": "m", "outcome": "error" if a < attempts - 1 else "ok", "latency_ms": 1.0,
             "error_type": None, "error_message": None, "status_code": None, "offset_ms": float(a)}
            for a in range(attempts)
        ],
        "events": [{"kind": "repair", "at_ms": 1.0}],
    }


def test_migrations_are_idempotent_and_traces_round_trip(store_url):
    store = Store(store_url)
    store.migrate()
    store.migrate()
    store.insert_traces([record(i, "a" if i % 2 else "b", attempts=1 + i % 3) for i in range(10)])
    got = store.get_trace(f"{5:032x}")
    assert got["feature"] == "a" and got["attempt_count"] == 3 and got["events"] == [{"kind": "repair", "at_ms": 1.0}]
    assert [a["outcome"] for a in got["attempts"]] == ["error", "error", "ok"]
    assert got["stream"] is False and got["total_tokens"] == 7
    newest = store.list_traces(limit=3)
    assert [r["trace_id"] for r in newest] == [f"{i:032x}" for i in (9, 8, 7)]
    assert {r["feature"] for r in store.list_traces(feature="b", limit=100)} == {"b"}
    assert store.count_traces() == 10
    assert store.get_trace("f" * 32) is None
    store.close()


def test_concurrent_migrations_do_not_collide(store_url):
    errors = []

    def migrate() -> None:
        store = Store(store_url)
        try:
            store.migrate()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[int] = []

    def insert_traces(self, records):
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.batches.append(len(records))
        return len(records)


async def test_writer_batches_and_flushes_everything_on_close():
    sink = FlakySink(0)
    writer = TraceWriter(sink, flush_interval_s=10, batch_size=100)
    await writer.start()
    for i in range(250):
        writer.submit(record(i))
    await asyncio.sleep(0.05)  # the batch threshold woke the flusher
    assert sum(sink.batches) >= 100
    await writer.aclose()
    assert sum(sink.batches) == 250 and writer.written == 250 and writer.pending == 0 and writer.dropped == 0


async def test_writer_keeps_records_when_the_store_fails(caplog):
    sink = FlakySink(45)  # down long enough that a whole batch, record by record, fails
    writer = TraceWriter(sink, flush_interval_s=0.01, batch_size=10)
    for i in range(30):
        writer.submit(record(i))
    await writer.start()
    await writer.aclose()
    assert writer.written == 30 and writer.write_errors >= 1 and writer.dropped == 0 and writer.rejected == 0
    assert "will retry" in caplog.text


async def test_writer_counts_what_it_cannot_hold():
    writer = TraceWriter(FlakySink(0), max_pending=1000)
    for i in range(1005):
        writer.submit(record(i))
    assert writer.pending == 1000 and writer.dropped == 5
    writer.flush_sync()
    assert writer.written == 1000


def test_gateway_records_every_call_in_the_configured_storage(store_url, primary, backup, write_config, serve):
    served = serve(write_config(f"storage: {store_url}\n" + textwrap.dedent(two_route_config(primary, backup))))
    primary.script(Fail(500), Reply("ok"))
    ids = []
    for _ in range(3):
        raw = served.client().chat.completions.with_raw_response.create(model="triage", messages=[{"role": "user", "content": "x"}])
        ids.append(raw.headers["x-shipyard-trace-id"])
    first = httpx.get(f"{served.base_url}/v1/traces/{ids[0]}").json()
    assert len(first["attempts"]) == 2 and first["attempts"][0]["status_code"] == 500
    served.__exit__(None, None, None)  # a clean stop flushes everything
    store = Store(store_url)
    assert {store.get_trace(i)["status"] for i in ids} == {"ok"}
    store.close()


class PickySink(FlakySink):
    """Refuses any batch holding a record with a bad value, as a database refuses a bad row."""

    def insert_traces(self, records):
        if any(r.get("feature") == "bad" for r in records):
            raise ValueError("value out of range")
        return super().insert_traces(records)


async def test_a_record_the_store_refuses_is_dropped_and_counted_not_retried_forever(caplog):
    sink = PickySink(0)
    writer = TraceWriter(sink, flush_interval_s=0.01, batch_size=10)
    await writer.start()
    writer.submit(record(0, feature="bad"))
    for i in range(1, 20):
        writer.submit(record(i))
    await writer.aclose()
    assert writer.written == 19 and writer.rejected == 1 and writer.pending == 0
    assert "rejected trace" in caplog.text


def test_nul_characters_are_stored(store_url):
    store = Store(store_url)
    store.migrate()
    rec = record(int(uuid.uuid4().int % 10**12))
    rec["error_message"] = "upstream said a\x00b"
    rec["attempts"][0]["error_message"] = "x\x00"
    assert store.insert_traces([rec]) == 1
    assert store.get_trace(rec["trace_id"])["error_message"] == "upstream said a\ufffdb"
    store.close()
