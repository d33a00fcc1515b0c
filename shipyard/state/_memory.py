"""The state of one process: the embedded default, and the reference the Redis state must match.

Every operation is a plain read-modify-write with no ``await`` inside, so on one event loop it is
atomic. The clock is injected (``clock=time.monotonic``): tests move it by hand.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import Bucket, Budget, BudgetDecision, RateDecision
from ._breaker import CircuitBreaker, Clock, LocalBreaker

if TYPE_CHECKING:
    import numpy as np

    from ._vectors import VectorTable

SWEEP_S = 60.0


def refill(tokens: float, since_s: float, bucket: Bucket) -> float:
    """The level of a bucket ``since_s`` after it held ``tokens`` (capped at its capacity)."""
    return min(bucket.capacity, tokens + max(0.0, since_s) * bucket.per_s)


def wait_for(level: float, bucket: Bucket) -> float | None:
    """Seconds until a bucket at ``level`` holds its cost; None if it never will."""
    if bucket.cost > bucket.capacity or bucket.per_s <= 0:
        return None
    return max(0.0, (bucket.cost - level) / bucket.per_s)


def breaker_params(**params: Any) -> dict[str, Any]:
    """The parameters of a breaker, checked once: the Redis script trusts them."""
    if not 0 < params["failure_ratio"] <= 1:
        raise ValueError("failure_ratio must be in (0, 1]")
    if params["window_s"] <= 0 or params["cooldown_s"] < 0 or params["probes"] < 1 or params["buckets"] < 1:
        raise ValueError("a breaker needs window_s > 0, cooldown_s >= 0, probes >= 1 and buckets >= 1")
    return params


class MemoryState:
    """``State`` in this process only (see ``shipyard.state``)."""

    degraded = False  # nothing to lose contact with
    errors_total = 0

    def __init__(self, *, clock: Clock = time.monotonic, max_cache_entries: int = 10_000,
                 max_vectors: int = 10_000) -> None:
        self.clock = clock
        self.max_cache_entries = max_cache_entries
        self.max_vectors = max_vectors
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (tokens, at, full again at)
        self._budgets: dict[str, list[int | float]] = {}  # key -> [spent, reserved, expires_at]
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # least recently used first
        self._vectors: dict[str, VectorTable] = {}
        self._breakers: dict[str, tuple[dict[str, Any], LocalBreaker]] = {}
        self._sweep_at = 1024  # clean-up of dead buckets and budgets, by size and by time: see _sweep
        self._sweep_after = clock() + SWEEP_S

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    # -- rate limits -------------------------------------------------------------------------------

    def _level(self, bucket: Bucket, now: float) -> float:
        held = self._buckets.get(bucket.key)
        return bucket.capacity if held is None else refill(held[0], now - held[1], bucket)

    async def take(self, buckets: Sequence[Bucket]) -> RateDecision:
        now = self.clock()
        levels: dict[str, float] = {}
        denied: list[str] = []
        retry: float | None = 0.0
        for b in buckets:
            level = levels[b.key] if b.key in levels else self._level(b, now)
            if level >= b.cost:
                levels[b.key] = level - b.cost  # tentative: a key listed twice pays twice
                continue
            denied.append(b.key)
            wait = wait_for(level, b)
            retry = None if wait is None or retry is None else max(retry, wait)
        if denied:
            return RateDecision(False, retry, tuple(denied))
        for b in buckets:
            self._put(b, levels[b.key], now)
        self._sweep(now)
        return RateDecision(True, 0.0, ())

    async def charge(self, buckets: Sequence[Bucket]) -> None:
        now = self.clock()
        for b in buckets:
            self._put(b, min(b.capacity, self._level(b, now) - b.cost), now)

    def _put(self, bucket: Bucket, level: float, now: float) -> None:
        full_at = now + (bucket.capacity - level) / bucket.per_s if bucket.per_s > 0 else float("inf")
        self._buckets[bucket.key] = (level, now, full_at)

    # -- budgets -----------------------------------------------------------------------------------

    def _budget(self, budget: Budget, now: float) -> list[int | float] | None:
        held = self._budgets.get(budget.key)
        if held is not None and held[2] <= now:
            del self._budgets[budget.key]
            return None
        return held

    async def reserve(self, budgets: Sequence[Budget], amount: int) -> BudgetDecision:
        now = self.clock()
        before: list[int] = []
        denied: str | None = None
        for b in budgets:
            held = self._budget(b, now)
            used = 0 if held is None else int(held[0] + held[1])
            before.append(used)
            if denied is None and b.hard and used + amount > b.limit:
                denied = b.key
        if denied is not None:
            return BudgetDecision(False, denied, tuple(before))
        for b in budgets:
            self._hold(b, now)[1] += amount
        self._sweep(now)
        return BudgetDecision(True, None, tuple(before))

    def _hold(self, budget: Budget, now: float) -> list[int | float]:
        held = self._budget(budget, now)
        if held is None:
            held = self._budgets[budget.key] = [0, 0, now + budget.ttl_s]
        return held

    async def settle(self, budgets: Sequence[Budget], reserved: int, actual: int) -> None:
        now = self.clock()
        for b in budgets:
            held = self._hold(b, now)
            held[1] = max(0, int(held[1]) - reserved)
            held[0] = int(held[0]) + actual

    async def admit(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], amount: int
    ) -> tuple[RateDecision, BudgetDecision]:
        # No await below suspends (these methods never do): the three steps are one, on the event loop.
        rate = await self.take(buckets)
        if not rate.allowed:
            return rate, BudgetDecision(True, None, ())
        budget = await self.reserve(budgets, amount)
        if not budget.allowed:
            await self.charge([Bucket(b.key, b.capacity, b.per_s, -b.cost) for b in buckets])
        return rate, budget

    async def finish(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], reserved: int, actual: int
    ) -> None:
        await self.charge(buckets)
        await self.settle(budgets, reserved, actual)

    async def spent(self, budgets: Sequence[Budget]) -> list[tuple[int, int]]:
        now = self.clock()
        out = []
        for b in budgets:
            held = self._budget(b, now)
            out.append((0, 0) if held is None else (int(held[0]), int(held[1])))
        return out

    def _sweep(self, now: float) -> None:
        # Buckets back at capacity and expired budgets are the same as absent ones: drop them once the
        # dicts have doubled or a minute has passed, so the cost is amortized and memory stays bounded
        # by the keys used lately, not by every key ever seen.
        if len(self._buckets) + len(self._budgets) < self._sweep_at and now < self._sweep_after:
            return
        self._budgets = {k: v for k, v in self._budgets.items() if v[2] > now}
        self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
        self._sweep_at = max(1024, 2 * (len(self._buckets) + len(self._budgets)))
        self._sweep_after = now + SWEEP_S

    # -- exact cache -------------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        held = self._cache.get(key)
        if held is None:
            return None
        if held[1] <= self.clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return held[0]

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache[key] = (value, self.clock() + ttl_s)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cache_entries:
            self._cache.popitem(last=False)

    # -- semantic cache vectors --------------------------------------------------------------------

    async def vectors_add(self, ns: str, entry: str, vector: np.ndarray, ttl_s: float) -> None:
        from ._vectors import VectorTable, unit

        now = self.clock()
        table = self._vectors.get(ns)
        if table is None or table.newest_expiry <= now:  # a dead namespace starts afresh
            table = self._vectors[ns] = VectorTable(self.max_vectors)
        table.add(entry, unit(vector), now + ttl_s)

    async def vectors_search(
        self, ns: str, vector: np.ndarray, threshold: float, limit: int = 5
    ) -> list[tuple[str, float]]:
        from ._vectors import unit

        table = self._vectors.get(ns)
        if table is None:
            return []
        now = self.clock()
        if table.newest_expiry <= now:
            del self._vectors[ns]
            return []
        return table.search(unit(vector), threshold, limit, now)

    # -- circuit breakers --------------------------------------------------------------------------

    def breaker(
        self,
        key: str,
        *,
        failure_ratio: float = 0.5,
        min_calls: int = 10,
        window_s: float = 30.0,
        cooldown_s: float = 15.0,
        probes: int = 1,
        buckets: int = 10,
    ) -> LocalBreaker:
        params = breaker_params(failure_ratio=failure_ratio, min_calls=min_calls, window_s=window_s,
                                cooldown_s=cooldown_s, probes=probes, buckets=buckets)
        held = self._breakers.get(key)
        if held is not None:
            if held[0] != params:
                raise ValueError(f"breaker {key!r} exists with other parameters: {held[0]}")
            return held[1]
        breaker = LocalBreaker(CircuitBreaker(clock=self.clock, **params))
        self._breakers[key] = (params, breaker)
        return breaker
