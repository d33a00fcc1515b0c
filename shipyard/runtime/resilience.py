"""Small policy objects for safe failure: backoff with full jitter and a circuit breaker.

Both take their clock (and the backoff its random source) as arguments, so tests drive them exactly,
with no real sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

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


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed / open / half-open over a sliding window of call outcomes.

    Closed: outcomes are counted in ``buckets`` slices of ``window_s``. When at least ``min_calls`` calls
    are in the window and the failure share reaches ``failure_ratio``, it opens. Open: ``allow()`` is
    False until ``cooldown_s`` has passed, then it is half-open. Half-open: up to ``probes`` calls may
    go through; one success closes it (with a clean window), one failure opens it again.
    """

    __slots__ = (
        "_generation",
        "_calls",
        "_epochs",
        "_fails",
        "_in_flight",
        "_n",
        "_opened_at",
        "_state",
        "_width",
        "clock",
        "cooldown_s",
        "failure_ratio",
        "min_calls",
        "probes",
        "window_s",
    )

    def __init__(
        self,
        *,
        failure_ratio: float = 0.5,
        min_calls: int = 10,
        window_s: float = 30.0,
        cooldown_s: float = 15.0,
        probes: int = 1,
        clock: Clock = time.monotonic,
        buckets: int = 10,
    ) -> None:
        self.failure_ratio = failure_ratio
        self.min_calls = min_calls
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.probes = probes
        self.clock = clock
        self._n = buckets
        self._width = window_s / buckets
        self._calls = [0] * buckets
        self._fails = [0] * buckets
        self._epochs = [-1] * buckets
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._in_flight = 0
        self._generation = 0  # bumped on every state change: tells a probe from a straggler

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._in_flight = 0
            self._generation += 1
        return self._state

    def admit(self) -> int | None:
        """A ticket if a call may go through now, else None. In half-open, a ticket reserves one probe.
        Pass the ticket to record()/release(): an outcome from a call admitted in an earlier state (a
        slow call that started before the breaker opened) then cannot close or re-open it."""
        state = self.state
        if state is BreakerState.CLOSED:
            return self._generation
        if state is BreakerState.HALF_OPEN and self._in_flight < self.probes:
            self._in_flight += 1
            return self._generation
        return None

    def allow(self) -> bool:
        """May a call go through now? In half-open, a True reserves one probe: report it with record()."""
        return self.admit() is not None

    def release(self, ticket: int | None = None) -> None:
        """A call that was allowed ended without telling anything about the route's health."""
        if ticket is not None and ticket != self._generation:
            return
        if self._state is BreakerState.HALF_OPEN and self._in_flight > 0:
            self._in_flight -= 1

    def record(self, success: bool, ticket: int | None = None) -> None:
        state = self.state
        if ticket is not None and ticket != self._generation:
            return  # admitted in an earlier state: says nothing about the route since then
        if state is BreakerState.HALF_OPEN:
            self._in_flight = max(0, self._in_flight - 1)
            if success:
                self._close()
            else:
                self._open()
            return
        if state is BreakerState.OPEN:
            return  # a straggler that started before the breaker opened
        epoch = int(self.clock() // self._width)
        i = epoch % self._n
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._calls[i] = 0
            self._fails[i] = 0
        self._calls[i] += 1
        if success:
            return
        self._fails[i] += 1
        oldest = epoch - self._n + 1
        calls = fails = 0
        for j in range(self._n):
            if self._epochs[j] >= oldest:
                calls += self._calls[j]
                fails += self._fails[j]
        if calls >= self.min_calls and fails >= self.failure_ratio * calls:
            self._open()

    def _open(self) -> None:
        self._generation += 1
        self._state = BreakerState.OPEN
        self._opened_at = self.clock()
        self._in_flight = 0

    def _close(self) -> None:
        self._generation += 1
        self._state = BreakerState.CLOSED
        self._calls = [0] * self._n
        self._fails = [0] * self._n
        self._epochs = [-1] * self._n
