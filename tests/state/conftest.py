"""One harness over both states: the behavioural suite runs against memory (with a hand-moved clock) and
against the real Redis of SHIPYARD_TEST_REDIS_URL (with real, short sleeps: Redis keeps server time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from shipyard.state import MemoryState, RedisState, State


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


MakeRedis = Callable[..., Awaitable[RedisState]]


@dataclass
class Harness:
    state: State
    advance: Callable[[float], Awaitable[None]]
    tol: float  # how far a time-derived figure may be off: 0 with the fake clock, a few ms of real time
    redis: bool

    async def settle_background(self) -> None:
        """Let background writes (breaker outcomes) reach Redis; nothing to wait for in memory."""
        if isinstance(self.state, RedisState):
            await self.state.drain()


async def delete_prefix(url: str, prefix: str) -> None:
    """Remove what a test wrote (the Redis server is shared: never FLUSHDB)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_state(redis_url: str, state_prefix: str) -> AsyncIterator[MakeRedis]:
    """Makes started RedisStates on the test's prefix (several share it, as replicas would); closes them
    and deletes the test's keys afterwards."""
    made: list[RedisState] = []

    async def make(url: str = redis_url, **kwargs: object) -> RedisState:
        kwargs.setdefault("prefix", state_prefix)
        kwargs.setdefault("poll_s", 0.05)
        state = RedisState(url, **kwargs)  # type: ignore[arg-type]
        await state.start()
        made.append(state)
        return state

    yield make
    for state in made:
        await state.aclose()
    await delete_prefix(redis_url, state_prefix)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def move(seconds: float) -> None:
            clock.advance(seconds)

        yield Harness(MemoryState(clock=clock, max_cache_entries=100, max_vectors=100), move, 0.0, False)
        return
    # Sync fixtures only: an async fixture cannot ask for another one through getfixturevalue.
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("state_prefix")
    state = RedisState(url, prefix=prefix, poll_s=0.05, max_vectors=100)
    await state.start()
    yield Harness(state, asyncio.sleep, 0.05, True)
    await state.aclose()
    await delete_prefix(url, prefix)
