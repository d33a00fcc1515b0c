"""What only the memory state has (bounds, expiry under a hand-moved clock), and the package's surface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import shipyard.state
from shipyard.runtime import resilience
from shipyard.state import (
    BreakerState,
    Bucket,
    Budget,
    CircuitBreaker,
    LocalBreaker,
    MemoryState,
    RateDecision,
    RedisState,
    State,
    open_state,
)
from tests.state.conftest import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_public_surface() -> None:
    assert set(shipyard.state.__all__) == {
        "BreakerLike", "BreakerState", "Bucket", "Budget", "BudgetDecision", "CircuitBreaker", "LocalBreaker",
        "MemoryState", "OnFailure", "RateDecision", "RedisState", "SharedBreaker", "State", "open_state",
    }
    for name in shipyard.state.__all__:
        assert getattr(shipyard.state, name) is not None


def test_both_implementations_have_the_protocols_signatures() -> None:
    members = [n for n, v in vars(State).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert {"take", "charge", "reserve", "settle", "spent", "cache_get", "vectors_search", "breaker"} <= set(members)
    for cls in (MemoryState, RedisState):
        for name in members:
            want, got = inspect.signature(getattr(State, name)), inspect.signature(getattr(cls, name))
            assert list(got.parameters) == list(want.parameters), (cls.__name__, name)
            assert [p.default for p in got.parameters.values()] == [p.default for p in want.parameters.values()]
            assert inspect.iscoroutinefunction(getattr(cls, name)) == inspect.iscoroutinefunction(
                getattr(State, name)), (cls.__name__, name)


def test_the_breaker_moved_and_runtime_still_exports_it() -> None:
    assert resilience.CircuitBreaker is CircuitBreaker
    assert resilience.BreakerState is BreakerState


def test_state_imports_neither_runtime_nor_its_extras_at_import() -> None:
    # runtime imports state, never the reverse; redis and numpy are extras: only the modules that need
    # them import them at their top (and the package imports those modules only when asked).
    package = Path(shipyard.state.__file__).parent
    top_level: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        names: set[str] = set()
        for node in tree.body:  # top level only: imports inside functions run when used
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Try):
                names |= {a.name for n in node.body if isinstance(n, ast.Import) for a in n.names}
                names |= {n.module or "" for n in node.body if isinstance(n, ast.ImportFrom)}
        top_level[path.name] = names
        assert not any("runtime" in n for n in names), path.name
    heavy = {f for f, names in top_level.items() if any(n.split(".")[0] in ("redis", "numpy") for n in names)}
    assert heavy == {"_redis.py", "_vectors.py"}
    assert not any(n in ("._redis", "._vectors") for n in top_level["__init__.py"] | top_level["_memory.py"])


def test_open_state_picks_the_implementation() -> None:
    assert isinstance(open_state("memory"), MemoryState)
    for url in ("redis://127.0.0.1:1/0", "rediss://h:6380/1", "unix:///tmp/redis.sock"):
        state = open_state(url, on_failure="fail_closed", prefix="p:")  # no connection until start()
        assert isinstance(state, RedisState) and state.on_failure == "fail_closed" and state.prefix == "p:"
    with pytest.raises(ValueError, match="unknown shared state 'postgresql://x'.*'memory'.*redis://"):
        open_state("postgresql://x")
    with pytest.raises(ValueError, match="on_failure"):
        open_state("redis://h", on_failure="maybe")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ buckets


async def test_refill_and_retry_after_are_exact(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    b = Bucket("rl", capacity=60, per_s=1.0, cost=30)
    assert (await s.take([b])).allowed and (await s.take([b])).allowed
    clock.advance(10)
    assert await s.take([b]) == RateDecision(False, 20.0, ("rl",))
    clock.advance(19.5)
    assert (await s.take([b])).retry_after_s == 0.5
    clock.advance(0.5)
    assert (await s.take([b])).allowed


async def test_no_refill_means_never(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    b = Bucket("rl", capacity=1, per_s=0.0, cost=1)
    assert (await s.take([b])).allowed
    assert await s.take([b]) == RateDecision(False, None, ("rl",))


async def test_full_buckets_and_expired_budgets_are_forgotten(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    for i in range(3000):
        await s.take([Bucket(f"rl:{i}", capacity=10, per_s=1.0, cost=1)])
        await s.reserve([Budget(f"b:{i}", 10, True, ttl_s=60)], 1)
    clock.advance(61)  # every bucket is full again, every budget expired: same as absent
    await s.take([Bucket("rl:last", 10, 1.0, 1)])
    assert len(s._buckets) + len(s._budgets) < 100  # bounded by the live keys, not by history


# ------------------------------------------------------------------------------------------ budgets


async def test_budget_counters_expire_ttl_after_creation(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    b = [Budget("budget:day", 100, hard=True, ttl_s=60)]
    await s.reserve(b, 30)
    clock.advance(50)
    await s.settle(b, reserved=30, actual=30)  # a later write does not push the expiry back
    assert await s.spent(b) == [(30, 0)]
    clock.advance(10)
    assert await s.spent(b) == [(0, 0)]
    assert (await s.reserve(b, 100)).allowed


# ------------------------------------------------------------------------------------------ caches


async def test_cache_evicts_the_least_recently_used(clock: FakeClock) -> None:
    s = MemoryState(clock=clock, max_cache_entries=3)
    for k in "abc":
        await s.cache_set(k, k.encode(), ttl_s=60)
    assert await s.cache_get("a") == b"a"  # a is now the most recently used
    await s.cache_set("d", b"d", ttl_s=60)
    assert [await s.cache_get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]


async def test_cache_expiry_is_exact(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    await s.cache_set("k", b"v", ttl_s=10)
    clock.advance(9.999)
    assert await s.cache_get("k") == b"v"
    clock.advance(0.001)
    assert await s.cache_get("k") is None


async def test_vectors_keep_the_newest_max_vectors(clock: FakeClock) -> None:
    s = MemoryState(clock=clock, max_vectors=3)
    for i in range(5):
        await s.vectors_add("ns", f"e{i}", np.array([1.0, i / 100]), ttl_s=60)
    await s.vectors_add("ns", "e3", np.array([1.0, 0.03]), ttl_s=60)  # replaced: becomes the newest
    await s.vectors_add("ns", "e5", np.array([1.0, 0.05]), ttl_s=60)
    hits = await s.vectors_search("ns", np.array([1.0, 0.0]), threshold=0.0, limit=10)
    assert sorted(e for e, _ in hits) == ["e3", "e4", "e5"]


async def test_vectors_search_many_rows_best_first(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(500, 16)).astype(np.float32)
    for i, row in enumerate(rows):
        await s.vectors_add("ns", str(i), row, ttl_s=60)
    query = rows[42] + 0.01 * rng.normal(size=16).astype(np.float32)
    hits = await s.vectors_search("ns", query, threshold=-1.0, limit=5)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    expected = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:5]
    assert [int(e) for e, _ in hits] == list(expected) and hits[0][0] == "42"
    assert [sc for _, sc in hits] == sorted((sc for _, sc in hits), reverse=True)


async def test_vectors_of_another_dimension_are_refused(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    await s.vectors_add("ns", "a", np.ones(4), ttl_s=60)
    with pytest.raises(ValueError, match="3 dimensions"):
        await s.vectors_add("ns", "b", np.ones(3), ttl_s=60)
    with pytest.raises(ValueError, match="3 dimensions"):
        await s.vectors_search("ns", np.ones(3), threshold=0.5)


# ------------------------------------------------------------------------------------------ breakers


async def test_memory_breaker_runs_on_the_injected_clock(clock: FakeClock) -> None:
    s = MemoryState(clock=clock)
    breaker = s.breaker("p/m", min_calls=2, cooldown_s=15)
    assert isinstance(breaker, LocalBreaker)
    for _ in range(2):
        breaker.record(False, await breaker.admit())
    assert breaker.state is BreakerState.OPEN
    clock.advance(14.9)
    assert await breaker.admit() is None
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
