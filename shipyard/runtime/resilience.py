"""Small policy objects for safe failure: backoff with full jitter and a circuit breaker.

Both take their clock (and the backoff its random source) as arguments, so tests drive them exactly,
with no real sleeping. The circuit breaker lives in :mod:`shipyard.state` (its state can be shared
through Redis) and is re-exported here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..state import BreakerState, CircuitBreaker

__all__ = ["Backoff", "BreakerState", "CircuitBreaker", "Clock"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter").

    ``delay(n)`` for the n-th retry (0-based) is uniform in [0, min(max_s, base_s * 2**n)]. A
    ``Retry-After`` from the provider is honoured as given, unless it exceeds ``max_retry_after_s``, in which
    case ``delay`` returns None: waiting that long is worse than moving to the next route.
    """

    base_s: float = 0.1
    max_s: float = 5.0
    max_retry_after_s: float = 30.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        cap = min(self.max_s, self.base_s * (2 ** min(retry, 32)))
        return cap * self.rand()
