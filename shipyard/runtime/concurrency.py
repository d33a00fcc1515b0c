"""Load shedding: a per-route concurrency limit with a short, bounded queue."""

from __future__ import annotations

import asyncio
from collections import deque


class ConcurrencyLimit:
    """At most ``max_in_flight`` calls at once; up to ``max_queue`` more wait (first come, first served)
    for at most ``queue_timeout_s``; the rest are shed at once. Shedding early is kinder than letting
    every caller queue into a timeout."""

    __slots__ = ("in_flight", "max_in_flight", "max_queue", "queue_timeout_s", "shed", "waiters")

    def __init__(self, max_in_flight: int, *, max_queue: int | None = None, queue_timeout_s: float = 0.25) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_in_flight if max_queue is None else max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.shed = 0

    async def acquire(self) -> bool:
        """True with a slot held (give it back with release()), False when shed."""
        if self.in_flight < self.max_in_flight and not self.waiters:
            self.in_flight += 1
            return True
        if len(self.waiters) >= self.max_queue or self.queue_timeout_s <= 0:
            self.shed += 1
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await asyncio.shield(waiter)
            return True  # release() handed its slot over to this waiter
        except TimeoutError:
            if waiter.done():
                return True  # the slot arrived as the timer fired: keep it
            self.shed += 1
            return False
        except asyncio.CancelledError:
            if waiter.done():
                self.release()  # handed a slot, then cancelled: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
                try:
                    self.waiters.remove(waiter)
                except ValueError:
                    pass

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter: in_flight is unchanged
                return
        self.in_flight -= 1
