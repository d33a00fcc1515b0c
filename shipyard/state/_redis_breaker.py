"""One circuit breaker shared by every process that uses the same Redis and key.

The state machine is ``CircuitBreaker``'s, step for step, in a Lua script (``_lua.BREAKER``) on Redis
server time, so half-open probe slots are granted atomically across processes and a straggler's ticket
(the generation it was admitted in) cannot close or re-open it.

The request path stays off Redis as much as it can. Each process keeps a mirror (state, generation,
open-until) of every breaker it has:

- ``admit()`` answers from the mirror while it says closed (the ticket is the mirrored generation) or
  open before the cooldown ends; only around half-open does it run the script, to get a probe slot.
- ``record()`` and ``release()`` are sync: they send the outcome in a background task, whose answer
  (the new state) updates the mirror. Successes while closed decide nothing, so they are counted here
  and sent together every ``BATCH_S`` (or just before the next failure, so the ratio is right): one
  round trip per batch instead of one per call.
- the owner's poll (every ``poll_s``, one pipelined round trip for all breakers) refreshes the mirrors,
  so an idle replica learns within a second that a breaker opened elsewhere. Until then its mirror may
  admit a few calls the shared breaker would refuse: the price of no round trip on the closed path.

Mirrors only move to a higher generation, so answers arriving out of order cannot roll one back. While
Redis is unreachable the breaker is a local ``CircuitBreaker``; its tickets are negative (the shared
generations are server-time milliseconds, never negative), so an outcome always goes back to the
machine that admitted it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._breaker import BreakerState, CircuitBreaker

if TYPE_CHECKING:
    from ._redis import RedisState

STATES = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)  # the script's 0, 1, 2
TTL_S = 86_400  # a breaker nobody has touched for a day starts afresh
BATCH_S = 0.1  # successes while closed are sent to Redis at most this late


class SharedBreaker:
    """``BreakerLike`` over Redis; made by ``RedisState.breaker()``."""

    __slots__ = ("_gen", "_oks", "_oks_gen", "_open_until", "_owner", "_state", "_tail", "key", "local", "params",
                 "redis_key")

    def __init__(self, owner: RedisState, key: str, redis_key: str, params: dict[str, Any]) -> None:
        self._owner = owner
        self.key = key
        self.redis_key = redis_key
        self.params = params
        self._tail = [str(params[p]) for p in ("failure_ratio", "min_calls", "window_s", "cooldown_s",
                                                "probes", "buckets")] + [str(TTL_S)]
        self.local = CircuitBreaker(clock=owner.clock, **params)
        self._state = BreakerState.CLOSED
        self._gen = -1  # not known yet: the first admit asks Redis
        self._open_until = 0.0
        self._oks = 0  # successes not sent yet, all of generation _oks_gen
        self._oks_gen = -1

    @property
    def state(self) -> BreakerState:
        if self._owner.degraded:
            return self.local.state
        if self._state is BreakerState.OPEN and self._owner.clock() >= self._open_until:
            return BreakerState.HALF_OPEN  # what the script will say on the next call
        return self._state

    @property
    def generation(self) -> int:
        """The mirrored generation (-1 until known)."""
        return self._gen

    async def admit(self) -> int | None:
        """A ticket if a call may go through now, else None (see ``CircuitBreaker.admit``)."""
        from ._redis import Unavailable

        if self._owner.degraded:
            return self._local_ticket(self.local.admit())
        if self._gen >= 0:
            if self._state is BreakerState.CLOSED:
                return self._gen
            if self._state is BreakerState.OPEN and self._owner.clock() < self._open_until:
                return None
        asking = asyncio.ensure_future(self._owner.run(self._script("admit", None, False)))
        try:
            answer = await asyncio.shield(asking)
        except Unavailable:
            return self._local_ticket(self.local.admit())
        except asyncio.CancelledError:
            # The caller left (a hedge lost, a client went) while Redis was granting a probe slot: when the
            # answer comes, give the slot back, or the breaker would stay half-open with no probe to end it.
            asking.add_done_callback(self._give_back)
            raise
        self._apply(answer)
        ticket = int(answer[3])
        return ticket if ticket >= 0 else None

    def _give_back(self, asking: asyncio.Future[Any]) -> None:
        if asking.cancelled() or asking.exception() is not None:
            return
        answer = asking.result()
        self._apply(answer)
        if int(answer[3]) >= 0:
            self.release(int(answer[3]))

    def record(self, success: bool, ticket: int | None = None) -> None:
        if ticket is not None and ticket < 0:
            self.local.record(success, -ticket - 1)
        elif self._owner.degraded:
            self._record_locally(success)
        elif ticket is not None and ticket < self._gen:
            return  # admitted before a state change this process already knows of: Redis would ignore it
        elif success and ticket is not None and ticket == self._gen and self._state is BreakerState.CLOSED:
            if self._oks and self._oks_gen != ticket:
                self._owner.spawn(self._send_oks())
            if not self._oks:
                self._owner.spawn(self._send_oks(after_s=BATCH_S))
            self._oks += 1
            self._oks_gen = ticket
        else:
            self._owner.spawn(self._send_oks_then("record", ticket, success))

    def release(self, ticket: int | None = None) -> None:
        if ticket is not None and ticket < 0:
            self.local.release(-ticket - 1)
        elif self._owner.degraded:
            return
        elif ticket is not None and ticket == self._gen and self._state is BreakerState.CLOSED:
            return  # releasing matters only in half-open, and this generation is a closed one
        else:
            self._owner.spawn(self._send("release", ticket, False))

    def sync(self, state: int | None, gen: int | None, cooldown_left_s: float) -> None:
        """Take what the owner's poll read from Redis (None: the breaker is not in Redis now)."""
        if state is None or gen is None:
            self._state, self._gen = BreakerState.CLOSED, -1
            return
        self._apply([state, gen, int(cooldown_left_s * 1000), -1])

    def _take_oks(self) -> tuple[int, int]:
        count, gen = self._oks, self._oks_gen
        self._oks = 0
        return count, gen

    async def _send_oks(self, after_s: float = 0.0) -> None:
        if after_s:
            await asyncio.sleep(after_s)
        count, gen = self._take_oks()
        if count:
            await self._send("ok", gen, True, count)

    async def _send_oks_then(self, op: str, ticket: int | None, success: bool) -> None:
        count, gen = self._take_oks()
        if count:
            await self._send("ok", gen, True, count)
        await self._send(op, ticket, success)

    async def _send(self, op: str, ticket: int | None, success: bool, count: int = 1) -> None:
        from ._redis import Unavailable

        try:
            self._apply(await self._owner.run(self._script(op, ticket, success, count)))
        except Unavailable:
            if op == "record":
                self._record_locally(success)
            elif op == "ok":
                for _ in range(count):
                    self._record_locally(True)

    def _script(self, op: str, ticket: int | None, success: bool, count: int = 1) -> Callable[[], Awaitable[Any]]:
        flag = str(count) if op == "ok" else "1" if success else "0"
        args = [op, "" if ticket is None else str(ticket), flag, *self._tail]
        return lambda: self._owner.scripts.breaker(keys=[self.redis_key], args=args)

    def _apply(self, answer: list[Any]) -> None:
        state, gen, left_ms = int(answer[0]), int(answer[1]), int(answer[2])
        if gen < self._gen:
            return  # an older answer that arrived late
        self._state, self._gen = STATES[state], gen
        self._open_until = self._owner.clock() + left_ms / 1000

    def _record_locally(self, success: bool) -> None:
        # An outcome of a call admitted by the shared breaker, while Redis is away: it still tells the
        # local breaker about the route, as long as that one is counting (closed) rather than probing.
        if self.local.state is BreakerState.CLOSED:
            self.local.record(success)

    @staticmethod
    def _local_ticket(ticket: int | None) -> int | None:
        return None if ticket is None else -ticket - 1
