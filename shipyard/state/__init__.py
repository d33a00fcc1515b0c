"""Fast shared state behind one interface: rate-limit buckets, budgets, caches, vectors, circuit breakers.

Two implementations of ``State``:

- ``MemoryState``: one process, the embedded default. Its clock is injected, so tests are exact and
  instant. Every read-modify-write runs without an ``await`` inside, so it is atomic on the event loop.
- ``RedisState``: every replica that points at the same Redis shares the counters; each multi-key
  operation is one Lua script (atomic across processes, on Redis server time). When Redis is
  unreachable it degrades as the config says (``fail_open`` or ``fail_closed``): see ``_redis``.

``open_state("memory" | "redis://..." | "rediss://..." | "unix://...")`` picks one. Keys given to the
state are bare (``rl:key:k_abc:rpm``); the state adds its own prefix. This package imports nothing of
``shipyard.runtime`` (runtime imports it), and Redis and numpy only when they are used: both are extras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._breaker import BreakerLike, BreakerState, CircuitBreaker, LocalBreaker

if TYPE_CHECKING:
    import numpy as np

    from ._redis import RedisState
    from ._redis_breaker import SharedBreaker

OnFailure = Literal["fail_open", "fail_closed"]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket of a rate limit."""

    key: str  # e.g. "rl:key:k_abc:rpm" (the state adds its own prefix)
    capacity: float  # burst size = the per-minute limit
    per_s: float  # refill rate = limit / 60
    cost: float  # what this call takes (1 for a request, n for tokens)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """``retry_after_s``: 0.0 when allowed; seconds until every denied bucket holds its cost; None when
    it never will (a cost above the capacity, or no refill)."""

    allowed: bool
    retry_after_s: float | None
    denied: tuple[str, ...]  # keys (without prefix) that lacked room
    degraded: bool = False  # decided without the shared state (fail_open)


@dataclass(frozen=True, slots=True)
class Budget:
    """One spending counter for one period, in nano-USD (1e-9 USD)."""

    key: str  # e.g. "budget:feature:support-triage:day:2026-11-25"
    limit: int
    hard: bool  # hard: a reservation that would pass the limit is refused; soft: always allowed
    ttl_s: int  # the counter expires this long after its creation (period length + margin)


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    allowed: bool
    denied: str | None  # key of the first hard budget that refused
    spent: tuple[int, ...]  # per budget, spent+reserved BEFORE this reservation (zeros when degraded)
    degraded: bool = False


class State(Protocol):
    """Shared counters, caches and breakers; see the module docstring for the two implementations."""

    @property
    def degraded(self) -> bool:
        """True while the backend is unreachable (Redis down); never for the memory state."""
        ...

    async def start(self) -> None:
        """Connect and load scripts. An unreachable backend is logged, not raised: the state starts
        degraded and the failure policy applies until it is back."""

    async def aclose(self) -> None: ...

    async def ping(self) -> bool: ...

    async def take(self, buckets: Sequence[Bucket]) -> RateDecision:
        """All or nothing, atomically: take each bucket's cost if every bucket holds it, else nothing."""
        ...

    async def charge(self, buckets: Sequence[Bucket]) -> None:
        """Debit each bucket's cost unconditionally (negative = refund). The level may go below zero,
        which delays later takes: used to settle the actual tokens after a call."""

    async def reserve(self, budgets: Sequence[Budget], amount: int) -> BudgetDecision:
        """Atomically: if a hard budget has spent+reserved+amount > limit, refuse and change nothing;
        else add ``amount`` to the reserved part of every budget."""
        ...

    async def settle(self, budgets: Sequence[Budget], reserved: int, actual: int) -> None:
        """After the call: release ``reserved`` (not below zero) and add ``actual`` to spent, per budget."""

    async def spent(self, budgets: Sequence[Budget]) -> list[tuple[int, int]]:
        """(spent, reserved) per budget."""
        ...

    async def admit(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], amount: int
    ) -> tuple[RateDecision, BudgetDecision]:
        """``take`` and ``reserve`` in one atomic step (one round trip on Redis): when either refuses,
        neither changes anything."""
        ...

    async def finish(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], reserved: int, actual: int
    ) -> None:
        """``charge`` and ``settle`` in one step (one round trip on Redis): after a call."""

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def vectors_add(self, ns: str, entry: str, vector: np.ndarray, ttl_s: float) -> None:
        """Store a vector (normalized to unit length here) under ``entry`` in namespace ``ns`` (one
        tenant+feature+params). Adding an entry again replaces it."""

    async def vectors_search(
        self, ns: str, vector: np.ndarray, threshold: float, limit: int = 5
    ) -> list[tuple[str, float]]:
        """Unexpired entries whose cosine similarity is >= threshold, best first, at most ``limit``."""
        ...

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
    ) -> BreakerLike:
        """The circuit breaker named ``key`` (parameters as ``CircuitBreaker``); the same key gives the same
        object within a process, and asking again with other parameters is a ValueError."""
        ...


def open_state(spec: str, *, on_failure: OnFailure = "fail_open", prefix: str = "shipyard:") -> State:
    """``"memory"`` or a Redis URL (``redis://``, ``rediss://``, ``unix://``) to a State."""
    if spec == "memory":
        return MemoryState()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from ._redis import RedisState

        return RedisState(spec, prefix=prefix, on_failure=on_failure)
    raise ValueError(
        f"unknown shared state {spec!r}: use 'memory' (one process) or a Redis URL "
        "(redis://host:6379/0, rediss://... for TLS, unix:///path/to/redis.sock)"
    )


def __getattr__(name: str) -> Any:
    # RedisState needs the `redis` extra: import it only when asked for, so `shipyard.state` (and
    # the runtime that imports it) works without it.
    if name == "RedisState":
        from ._redis import RedisState

        return RedisState
    if name == "SharedBreaker":
        from ._redis_breaker import SharedBreaker

        return SharedBreaker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Imported last: it builds the dataclasses defined above.
from ._memory import MemoryState

__all__ = [
    "BreakerLike",
    "BreakerState",
    "Bucket",
    "Budget",
    "BudgetDecision",
    "CircuitBreaker",
    "LocalBreaker",
    "MemoryState",
    "OnFailure",
    "RateDecision",
    "RedisState",
    "SharedBreaker",
    "State",
    "open_state",
]
