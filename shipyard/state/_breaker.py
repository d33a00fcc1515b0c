"""The circuit breaker: its state machine in one process, and the face every breaker shows.

``CircuitBreaker`` is the exact, single-process state machine (it takes its clock as an argument, so tests
drive it with no real sleeping). ``LocalBreaker`` gives it the async ``admit()`` of ``BreakerLike``, the
face shared by the memory state and the Redis state, whose breaker runs the same machine in a Lua script.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol

Clock = Callable[[], float]


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
        "_calls",
        "_epochs",
        "_fails",
        "_generation",
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


class BreakerLike(Protocol):
    """What the route stage needs from a breaker, whatever holds its state."""

    @property
    def state(self) -> BreakerState: ...

    async def admit(self) -> int | None: ...

    def record(self, success: bool, ticket: int | None = None) -> None: ...

    def release(self, ticket: int | None = None) -> None: ...


class LocalBreaker:
    """A ``CircuitBreaker`` of this process behind the async face of ``BreakerLike``."""

    __slots__ = ("breaker",)

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    @property
    def state(self) -> BreakerState:
        return self.breaker.state

    async def admit(self) -> int | None:
        return self.breaker.admit()

    def record(self, success: bool, ticket: int | None = None) -> None:
        self.breaker.record(success, ticket)

    def release(self, ticket: int | None = None) -> None:
        self.breaker.release(ticket)
