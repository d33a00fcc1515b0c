"""What only the Redis state has: sharing across instances and OS processes, the vector mirrors, the
shared breaker's mirror and poll, and the failure policy (a dead port, and a real TCP proxy to Redis that
the test cuts and restores)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis.asyncio as aioredis

from shipyard.errors import StateUnavailable
from shipyard.state import BreakerState, Bucket, Budget, RedisState, SharedBreaker
from shipyard.state._redis import redacted
from tests.conftest import free_port
from tests.state.conftest import MakeRedis, delete_prefix

pytestmark = pytest.mark.redis
Make = MakeRedis
SLOW = 0.001


async def eventually(check: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


class Proxy:
    """A TCP forwarder to Redis on a port of its own, that the test can cut (every connection closed,
    nothing listening) and restore on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.target_port, self.db = parts.hostname or "127.0.0.1", parts.port or 6379, parts.path
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.db}"

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
        for t in list(self.pipes):
            t.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        self.writers |= {writer, up_writer}
        pipes = [asyncio.create_task(self._pipe(reader, up_writer)),
                 asyncio.create_task(self._pipe(up_reader, writer))]
        self.pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self.pipes.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.writers.discard(writer)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[Proxy]:
    p = Proxy(redis_url)
    await p.up()
    yield p
    if p.server is not None:
        await p.down()


@pytest.fixture
def make(redis_state: Make) -> Make:
    return redis_state


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "shipyard.state" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------ sharing


async def test_two_instances_share_one_bucket_exactly(make: Make) -> None:
    a, b = await make(), await make()
    bucket = Bucket("rl:shared", capacity=50, per_s=SLOW, cost=1)
    decisions = await asyncio.gather(*(s.take([bucket]) for _ in range(150) for s in (a, b)))
    assert sum(d.allowed for d in decisions) == 50


WORKER = textwrap.dedent("""
    import asyncio, json, sys, time
    from shipyard.state import Bucket, Budget, RedisState

    async def main(url, prefix, go_at):
        state = RedisState(url, prefix=prefix)
        await state.start()
        await asyncio.sleep(max(0.0, go_at - time.time()))  # both processes start together
        bucket = Bucket("rl:procs", capacity=50, per_s=0.001, cost=1)
        budget = [Budget("budget:procs", 300, hard=True, ttl_s=60)]
        takes = await asyncio.gather(*(state.take([bucket]) for _ in range(150)))
        reserves = await asyncio.gather(*(state.reserve(budget, 7) for _ in range(50)))
        await state.aclose()
        print(json.dumps([sum(d.allowed for d in takes), sum(d.allowed for d in reserves)]))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
""")


async def test_two_os_processes_share_buckets_and_budgets_exactly(redis_url: str, state_prefix: str) -> None:
    go_at = time.time() + 1.5
    args = [sys.executable, "-c", WORKER, redis_url, state_prefix, str(go_at)]
    pipe = asyncio.subprocess.PIPE
    procs = [await asyncio.create_subprocess_exec(*args, stdout=pipe, stderr=pipe) for _ in range(2)]
    try:
        outs = [await asyncio.wait_for(p.communicate(), 20) for p in procs]
    finally:
        await delete_prefix(redis_url, state_prefix)
    assert all(p.returncode == 0 for p in procs), [err.decode() for _, err in outs]
    counts = [json.loads(out) for out, _ in outs]
    assert sum(c[0] for c in counts) == 50
    assert sum(c[1] for c in counts) == 42  # 42 * 7 = 294 <= 300


async def test_budget_expiry_is_set_at_creation_and_not_pushed_back(make: Make, redis_url: str,
                                                                    state_prefix: str) -> None:
    s = await make()
    await s.reserve([Budget("budget:ttl", 100, True, ttl_s=100)], 1)
    await s.settle([Budget("budget:ttl", 100, True, ttl_s=5000)], 1, 1)
    await s.reserve([Budget("budget:ttl", 100, True, ttl_s=5000)], 1)
    ttl = await s.client.ttl(state_prefix + "budget:ttl")
    assert 0 < ttl <= 100
    # A full bucket is an absent one: its key expires when it would be full again.
    await s.take([Bucket("rl:ttl", capacity=10, per_s=2.0, cost=4)])
    assert 0 < await s.client.pttl(state_prefix + "rl:ttl") <= 3000


# ------------------------------------------------------------------------------------------ vectors


async def test_instances_see_each_others_vectors(make: Make) -> None:
    a, b = await make(), await make()
    assert await b.vectors_search("t:f", np.array([1.0, 0.0]), 0.9) == []
    await a.vectors_add("t:f", "from-a", np.array([1.0, 0.0]), ttl_s=60)
    assert [e for e, _ in await b.vectors_search("t:f", np.array([1.0, 0.01]), 0.9)] == ["from-a"]
    await b.vectors_add("t:f", "from-b", np.array([1.0, 0.02]), ttl_s=60)
    await a.vectors_add("t:f", "from-a-again", np.array([0.0, 1.0]), ttl_s=60)
    assert [e for e, _ in await b.vectors_search("t:f", np.array([1.0, 0.0]), 0.9)] == ["from-a", "from-b"]
    assert [e for e, _ in await a.vectors_search("t:f", np.array([0.0, 1.0]), 0.9)] == ["from-a-again"]


async def test_a_new_replica_reads_a_namespace_in_pages(make: Make) -> None:
    writer = await make(max_vectors=5000)
    rows = np.random.default_rng(3).normal(size=(1500, 8))
    await asyncio.gather(*(writer.vectors_add("big", str(i), r, ttl_s=60) for i, r in enumerate(rows)))
    reader = await make(max_vectors=5000)
    hits = await reader.vectors_search("big", rows[1234], threshold=-1.0, limit=5000)
    assert len(hits) == 1500 and hits[0][0] == "1234"


async def test_a_mirror_keeps_the_newest_max_vectors(make: Make) -> None:
    writer, reader = await make(max_vectors=1000), await make(max_vectors=100)
    for i in range(300):
        await writer.vectors_add("ns", f"e{i}", np.array([1.0, i / 1000]), ttl_s=60)
    names = {e for e, _ in await reader.vectors_search("ns", np.array([1.0, 0.0]), -1.0, limit=1000)}
    assert len(names) == 100 and "e299" in names and "e0" not in names


# ------------------------------------------------------------------------------------------ breakers


def shared(state: RedisState, key: str = "openai/gpt") -> SharedBreaker:
    return state.breaker(key, min_calls=2, failure_ratio=0.5, window_s=10, cooldown_s=0.3)


async def test_an_idle_replica_learns_the_breaker_opened_and_closed_elsewhere(make: Make) -> None:
    a, b = await make(), await make()
    ba, bb = shared(a), shared(b)
    assert await bb.admit() is not None and bb.state is BreakerState.CLOSED
    for _ in range(2):
        ba.record(False, await ba.admit())
    await a.drain()
    assert ba.state is BreakerState.OPEN
    await eventually(lambda: bb.state is BreakerState.OPEN)  # by the poll alone: b sent nothing
    assert await bb.admit() is None
    await asyncio.sleep(0.3)
    probe = await ba.admit()
    assert probe is not None
    ba.record(True, probe)
    await a.drain()
    await eventually(lambda: bb.state is BreakerState.CLOSED and bb.generation == ba.generation)


async def test_half_open_grants_the_probe_to_exactly_one_replica(make: Make) -> None:
    states = [await make() for _ in range(3)]
    breakers = [shared(s) for s in states]
    for _ in range(2):
        breakers[0].record(False, await breakers[0].admit())
    await states[0].drain()
    await eventually(lambda: all(b.state is BreakerState.OPEN for b in breakers))
    await asyncio.sleep(0.3)
    tickets = await asyncio.gather(*(b.admit() for b in breakers for _ in range(5)))
    assert sum(t is not None for t in tickets) == 1


async def test_a_straggler_from_another_replica_cannot_close_it(make: Make) -> None:
    a, b = await make(), await make()
    ba, bb = shared(a), shared(b)
    straggler = await bb.admit()  # b admitted a call while closed
    for _ in range(2):
        ba.record(False, await ba.admit())
    await a.drain()
    await asyncio.sleep(0.3)
    probe = await ba.admit()
    assert probe is not None
    bb.record(True, straggler)  # b's slow call finally succeeds: says nothing about now
    await b.drain()
    await eventually(lambda: ba.state is BreakerState.HALF_OPEN and bb.state is BreakerState.HALF_OPEN, 1.0)
    ba.record(True, probe)
    await a.drain()
    assert ba.state is BreakerState.CLOSED


async def test_a_closed_breaker_admits_from_its_mirror_without_redis(proxy: Proxy, make: Make) -> None:
    s = await make(url=proxy.url, poll_s=60)  # no poll in this test
    b = shared(s)
    ticket = await b.admit()  # the first admit learns the generation from Redis
    await proxy.down()
    assert [await b.admit() for _ in range(3)] == [ticket] * 3
    assert not s.degraded and s.errors_total == 0  # not one call was tried


# ------------------------------------------------------------------------------------------ failure policy


async def test_unreachable_at_start_fail_open(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "shipyard.state")
    s = await make(url=f"redis://:sekret@127.0.0.1:{free_port()}/0", retry_s=60)  # start() does not raise
    assert s.degraded and s.errors_total == 1
    assert not await s.ping()
    errors = s.errors_total
    d = await s.take([Bucket("rl:x", 1, 1, 1)])
    assert d.allowed and d.degraded
    r = await s.reserve([Budget("budget:x", 1, True, 60)], 5)
    assert r.allowed and r.degraded and r.spent == (0,)
    assert await s.spent([Budget("budget:x", 1, True, 60)]) == [(0, 0)]
    await s.charge([Bucket("rl:x", 1, 1, 3)])
    await s.settle([Budget("budget:x", 1, True, 60)], 5, 4)
    await s.cache_set("k", b"v", 60)
    assert await s.cache_get("k") is None
    await s.vectors_add("ns", "e", np.ones(3), 60)
    assert await s.vectors_search("ns", np.ones(3), 0.0) == []
    assert s.errors_total == errors  # in its back-off: not one of these tried Redis
    # The breaker falls back to one of this process.
    b = shared(s)
    for _ in range(2):
        b.record(False, await b.admit())
    assert b.state is BreakerState.OPEN and await b.admit() is None
    [warning] = warnings_of(caplog)
    assert "unreachable" in warning and "fail_open" in warning and "sekret" not in warning
    assert f"127.0.0.1:{urlsplit(s.url).port}" in warning


async def test_unreachable_fail_closed_refuses_limits_but_not_caches(make: Make) -> None:
    port = free_port()
    s = await make(url=f"redis://user:sekret@127.0.0.1:{port}/0", on_failure="fail_closed")
    where = rf"Redis at redis://user@127\.0\.0\.1:{port}/0"
    with pytest.raises(StateUnavailable, match=where + ".*fail_closed") as e:
        await s.take([Bucket("rl:x", 1, 1, 1)])
    assert "sekret" not in str(e.value) and e.value.status == 503
    with pytest.raises(StateUnavailable):
        await s.reserve([Budget("budget:x", 1, True, 60)], 1)
    assert await s.cache_get("k") is None
    await s.cache_set("k", b"v", 60)
    await s.charge([Bucket("rl:x", 1, 1, 1)])  # after-the-call accounting never raises


async def test_recovery_replays_what_was_kept(proxy: Proxy, make: Make,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "shipyard.state")
    s = await make(url=proxy.url, retry_s=0.1)
    direct = await make()  # the same keys, straight to Redis
    bucket = Bucket("rl:tpm", capacity=100, per_s=SLOW, cost=1)
    day = [Budget("budget:day", 1000, True, 3600)]
    assert (await s.reserve(day, 10)).allowed  # held in Redis
    await proxy.down()
    assert (await s.take([bucket])).degraded
    assert (await s.reserve(day, 20)).degraded  # allowed blind: never reached Redis
    await s.charge([Bucket("rl:tpm", 100, SLOW, 30)])
    await s.charge([Bucket("rl:tpm", 100, SLOW, 20)])
    await s.settle(day, reserved=20, actual=15)  # settles the blind reservation
    for _ in range(5):
        await s.take([bucket])
    assert len(warnings_of(caplog)) == 1  # one warning for the whole outage
    await proxy.up()
    await eventually(lambda: not s.degraded)  # the poll finds it back, no request needed
    await s.drain()
    assert any("reachable again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    # 50 tokens charged while down arrived; the blind reservation released nothing held in Redis.
    assert [(await direct.take([bucket])).allowed for _ in range(51)] == [True] * 50 + [False]
    assert await direct.spent(day) == [(15, 10)]
    await s.settle(day, reserved=10, actual=5)
    assert await direct.spent(day) == [(20, 0)]
    assert len(warnings_of(caplog)) == 1


async def test_back_off_skips_redis_then_tries_again(proxy: Proxy, make: Make) -> None:
    s = await make(url=proxy.url, retry_s=0.2, poll_s=60)
    await proxy.down()
    assert (await s.take([Bucket("rl:x", 5, 1, 1)])).degraded
    errors = s.errors_total
    assert errors >= 1
    for _ in range(20):
        await s.cache_get("k")
    assert s.errors_total == errors  # skipped: no timeout added to every call
    await asyncio.sleep(0.2)
    await asyncio.gather(*(s.cache_get("k") for _ in range(20)))
    assert s.errors_total == errors + 1  # once the back-off is over, one call tries; the others skip
    await proxy.up()
    await asyncio.sleep(0.2)
    assert not (await s.take([Bucket("rl:x", 5, 1, 1)])).degraded
    assert not s.degraded


def test_redacted_url() -> None:
    assert redacted("redis://:pw@h:6379/0") == "redis://h:6379/0"
    assert redacted("rediss://me:pw@h/2?password=pw") == "rediss://me@h/2"
    assert redacted("unix:///run/redis.sock?db=1&password=pw") == "unix:///run/redis.sock"


async def test_closing_a_degraded_state_is_clean(redis_url: str) -> None:
    s = RedisState(f"redis://127.0.0.1:{free_port()}/0", prefix="unused:")
    await s.start()
    assert s.degraded
    await s.aclose()
    client = aioredis.Redis.from_url(redis_url)
    assert await client.ping()
    await client.aclose()


async def test_successes_are_sent_in_batches_and_before_the_next_failure(make: Make) -> None:
    s = await make(poll_s=60)
    b = s.breaker("breaker:batched", min_calls=4, failure_ratio=0.5, window_s=10, cooldown_s=5)
    ticket = await b.admit()
    for _ in range(3):
        b.record(True, ticket)
    await asyncio.sleep(0)
    raw = await s.client.hgetall(s.prefix + "breaker:batched")
    assert sum(int(v) for k, v in raw.items() if k.decode().startswith("c")) == 0  # not sent one by one
    b.record(False, ticket)
    b.record(False, ticket)
    await s.drain()
    # 3 successes went first, so 2 failures of 5 calls stay under the ratio; a 1:1 pair would have opened
    assert b.state is BreakerState.CLOSED
    b.record(False, ticket)
    await s.drain()
    assert b.state is BreakerState.OPEN  # 3 of 6
    b2 = s.breaker("breaker:batched-timer", min_calls=4, failure_ratio=0.5, window_s=10, cooldown_s=5)
    t2 = await b2.admit()
    for _ in range(5):
        b2.record(True, t2)
    await s.drain()  # the batch timer fires within BATCH_S
    raw = await s.client.hgetall(s.prefix + "breaker:batched-timer")
    assert sum(int(v) for k, v in raw.items() if k.decode().startswith("c")) == 5
