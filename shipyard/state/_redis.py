"""The state shared by every replica through one Redis.

Layout (every key under ``prefix``; the caller's keys name their kind, ``rl:...``, ``budget:...``):

- a bucket: hash {tokens, ts}, ts in server seconds; it expires when it would be full again.
- a budget: hash {spent, reserved} in nano-USD, EXPIRE ttl_s set when it is created.
- an exact cache entry: a string, SET PX.
- a circuit breaker: hash (see ``_redis_breaker``).
- ``vec:<ns>``: a stream per namespace of the semantic cache, one entry per vector: {e: entry,
  v: float32 bytes, t: ttl ms}; the entry id is the server time of the XADD, so an entry expires at
  id + t, in server time. Trimmed with MAXLEN ~ max_vectors; the stream expires with its last entry.

Rate limits and budgets are one Lua script before a call (ADMIT: every bucket and budget at once) and
one after it (FINISH), breakers one per outcome (successes batched), so a decision over several keys is
atomic across processes and a call costs two round trips for all its limits. redis-py runs them by EVALSHA and loads them again after a
Redis restart (NOSCRIPT). Multi-key scripts need every key on one node: Redis Cluster is not supported.

Vectors: every process mirrors the streams it searches into a local ``VectorTable`` (one numpy matrix
per namespace). A search first reads what was added since the last id it saw (XRANGE exclusive of
that id: one round trip, usually empty or a few entries), then scores the whole namespace locally with
one matrix product. Vectors cross the network once per process, never per search; a process that
searches a namespace for the first time reads it in pages of 1,000. At most ``max_mirrors`` namespaces
are mirrored (least recently searched dropped; a dropped one is read again when needed).

Failure policy. A call that fails for want of Redis (connection refused or reset, timeout, loading,
read-only replica) marks the state ``degraded``, logs one warning (logger ``shipyard.state``) and
skips Redis for ``retry_s`` (so an outage does not add a timeout to every request); one call is then
let through to try again (or the poll, when no request comes), and one info line says when Redis is
back. Waiting for one of the ``max_connections`` slots is local load, never taken for an outage.
``errors_total`` counts the failed calls. While degraded:

- ``fail_open``: take and reserve allow, with ``degraded=True`` in the decision; ``fail_closed``: they
  raise ``StateUnavailable`` (503). ``spent`` answers zeros (fail_open) or raises (fail_closed).
- charge and settle are kept in this process (summed per key) and replayed when Redis is back, so
  tokens and money spent during an outage are not lost. Takes that were allowed blind are not replayed.
  A reservation allowed blind is remembered per key (``_blind``), so its settlement does not release
  a reservation another call holds in Redis.
- the caches miss and their writes are dropped; circuit breakers run as local ones (both policies).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..errors import StateUnavailable
from . import Bucket, Budget, BudgetDecision, OnFailure, RateDecision
from ._lua import ADMIT, BREAKER, FINISH, VECTORS_ADD
from ._memory import breaker_params
from ._redis_breaker import SharedBreaker

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the Redis state needs the redis package: pip install 'shipyard[redis]'") from exc

if TYPE_CHECKING:
    import numpy as np

    from ._vectors import VectorTable

log = logging.getLogger("shipyard.state")
T = TypeVar("T")

# What "Redis is unreachable" looks like (BusyLoadingError is a ConnectionError; ReadOnlyError: we talk
# to a replica after a failover). Anything else (a wrong type, a script error) is a bug, and raised.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, asyncio.TimeoutError)
PAGE = 1000  # stream entries read per round trip when a mirror catches up


class Unavailable(Exception):
    """Redis failed just now or is in its back-off: the caller applies the failure policy."""


CLOSE_S = 5.0
"""The longest each step of closing waits on Redis."""


def redacted(url: str) -> str:
    """The URL without its password (nor a query string, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    netloc = user + host + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


@dataclass(slots=True)
class _Scripts:
    admit: Any
    finish: Any
    vectors_add: Any
    breaker: Any


@dataclass(slots=True)
class _Mirror:
    table: VectorTable | None = None
    last: tuple[int, int] = (0, -1)  # the last stream id applied: (ms, seq)


class RedisState:
    """``State`` shared through Redis (see the module docstring for the layout and the failure policy)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "shipyard:",
        on_failure: OnFailure = "fail_open",
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        poll_s: float = 1.0,
        max_vectors: int = 10_000,
        max_mirrors: int = 256,
        max_connections: int = 32,
    ) -> None:
        if on_failure not in ("fail_open", "fail_closed"):
            raise ValueError(f"on_failure must be 'fail_open' or 'fail_closed', not {on_failure!r}")
        self.url = url
        self.where = redacted(url)
        self.prefix = prefix
        self.on_failure = on_failure
        self.retry_s = retry_s
        self.poll_s = poll_s
        self.max_vectors = max_vectors
        self.max_mirrors = max_mirrors
        self.clock: Callable[[], float] = time.monotonic
        self.degraded = False
        self.errors_total = 0
        # Short timeouts and one immediate retry: a stale pooled connection (after a Redis restart) is
        # replaced at once, and a dead Redis costs at most two short timeouts, once per back-off.
        # Connecting gets more time than a command: a burst opens many connections at once.
        self.client = aioredis.Redis.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=max(1.0, timeout_s),
            retry=Retry(NoBackoff(), 1),
        )
        # Calls beyond max_connections wait here, not in the pool: waiting for a slot is local load,
        # not a sign that Redis is down, so it must not time out into the failure policy.
        self._slots = asyncio.Semaphore(max_connections)
        self.scripts = _Scripts(*(self.client.register_script(s) for s in (ADMIT, FINISH, VECTORS_ADD, BREAKER)))
        self._retry_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._breakers: dict[str, SharedBreaker] = {}
        self._mirrors: OrderedDict[str, _Mirror] = OrderedDict()
        self._offset_s = 0.0  # Redis server time - time.time(), to expire mirrored vectors
        self._charges: dict[str, Bucket] = {}  # kept while degraded: key -> bucket with the summed cost
        self._settles: dict[str, tuple[Budget, int, int]] = {}  # key -> (budget, release, actual)
        self._blind: dict[str, int] = {}  # reserved while degraded, per budget key: never in Redis

    # -- lifecycle and the failure policy -------------------------------------------------------------

    async def start(self) -> None:
        """Connect and load the scripts; an unreachable Redis is logged and the state starts degraded."""
        try:
            await self.run(self._handshake)
        except Unavailable:
            pass  # logged by run(); the poll keeps trying
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="shipyard.state.poll")

    async def _handshake(self) -> None:
        await self._measure_offset()
        for script in (self.scripts.admit, self.scripts.finish, self.scripts.vectors_add, self.scripts.breaker):
            await self.client.script_load(script.script)  # so the first EVALSHA finds it

    async def _measure_offset(self) -> None:
        before = time.time()
        seconds, micros = await self.client.time()
        self._offset_s = seconds + micros / 1e6 - (before + time.time()) / 2

    async def aclose(self) -> None:
        """Finish the background writes, replay what was kept if Redis is there, and close the connections;
        each step within ``CLOSE_S``, so that a stop never hangs on Redis (what is left is logged)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        try:
            async with asyncio.timeout(CLOSE_S):
                await self.drain()
                if self._charges or self._settles:
                    await self.ping()  # one last try: if Redis is back, this replays what was kept
                    await self.drain()
        except TimeoutError:
            log.warning("closing: %d background write(s) to Redis at %s did not finish within %gs",
                        len(self._tasks), self.where, CLOSE_S)
            for task in list(self._tasks):
                task.cancel()
        if self._charges or self._settles:
            log.warning("closing with %d charges and %d settlements that Redis at %s never received",
                        len(self._charges), len(self._settles), self.where)
        try:
            async with asyncio.timeout(CLOSE_S):
                await self.client.aclose(close_connection_pool=True)
        except TimeoutError:
            log.warning("closing: the connections to Redis at %s did not close within %gs", self.where, CLOSE_S)

    async def drain(self) -> None:
        """Wait for the background writes of this process (breaker outcomes, replays) to finish."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def ping(self) -> bool:
        """Ask Redis now, whatever the back-off says (for health checks)."""
        self._retry_at = 0.0
        try:
            return bool(await self.run(self.client.ping))
        except Unavailable:
            return False

    async def run(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation under the failure policy: raises ``Unavailable`` instead of waiting on
        a Redis that just failed."""
        probe = self._gate(probe=False)
        async with self._slots:
            self._gate(probe)  # Redis may have failed while this call waited for a slot
            failures = self.errors_total
            try:
                result = await op()
            except UNREACHABLE as exc:
                self._failed(exc)
                raise Unavailable from exc
        # Only a call that started after the last failure proves Redis is back: one that was already on
        # its way when the outage began may still succeed, and must not make the state flap.
        if self.degraded and failures == self.errors_total:
            self._recovered()
        return result

    def _gate(self, probe: bool) -> bool:
        """Raise ``Unavailable`` while degraded and in the back-off; once it is over, let one call (the
        probe) through and keep the others out. True for the probe."""
        if not self.degraded or probe:
            return probe
        now = self.clock()
        if now < self._retry_at:
            raise Unavailable
        self._retry_at = now + self.retry_s
        return True

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run in the background; the set holds a strong reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, exc: BaseException) -> None:
        self.errors_total += 1
        self._retry_at = self.clock() + self.retry_s
        if self.degraded:
            return
        self.degraded = True
        if self.on_failure == "fail_open":
            policy = ("fail_open: rate limits and budgets allow every call (marked degraded), charges are "
                      "kept here and replayed when it is back")
        else:
            policy = ("fail_closed: calls that need a rate limit or a budget are refused "
                      "(503 state_unavailable)")
        log.warning("Redis at %s is unreachable (%s: %s); policy %s; caches miss and circuit breakers are "
                    "per process until it is back; trying again every %g s",
                    self.where, type(exc).__name__, exc, policy, self.retry_s)

    def _recovered(self) -> None:
        self.degraded = False
        log.info("Redis at %s is reachable again (%d failed calls); replaying %d charges and %d settlements",
                 self.where, self.errors_total, len(self._charges), len(self._settles))
        self.spawn(self._replay())

    async def _replay(self) -> None:
        try:
            await self.run(self._measure_offset)
            for key in list(self._charges):
                bucket = self._charges.pop(key)
                try:
                    await self.run(self._finish_op([bucket], [], [], 0))
                except Unavailable:
                    self._keep_charge(bucket)
                    return
            for key in list(self._settles):
                budget, release, actual = self._settles.pop(key)
                try:
                    await self.run(self._finish_op([], [budget], [release], actual))
                except Unavailable:
                    self._keep_settle(budget, release, actual)
                    return
        except Unavailable:
            return

    def _unavailable(self, what: str) -> StateUnavailable:
        return StateUnavailable(
            f"cannot {what}: the shared state (Redis at {self.where}) is unreachable and the config says "
            "on_failure: fail_closed"
        )

    def _k(self, key: str) -> str:
        return self.prefix + key

    # -- rate limits and budgets: one script before a call (ADMIT), one after (FINISH) ---------------

    async def take(self, buckets: Sequence[Bucket]) -> RateDecision:
        return (await self.admit(buckets, (), 0))[0]

    async def reserve(self, budgets: Sequence[Budget], amount: int) -> BudgetDecision:
        return (await self.admit((), budgets, amount))[1]

    async def charge(self, buckets: Sequence[Bucket]) -> None:
        await self.finish(buckets, (), 0, 0)

    async def settle(self, budgets: Sequence[Budget], reserved: int, actual: int) -> None:
        await self.finish((), budgets, reserved, actual)

    async def admit(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], amount: int
    ) -> tuple[RateDecision, BudgetDecision]:
        if not buckets and not budgets:
            return RateDecision(True, 0.0, ()), BudgetDecision(True, None, ())
        args: list[Any] = [len(buckets), int(amount)]
        for b in buckets:
            args += [b.capacity, b.per_s, b.cost]
        for g in budgets:
            args += [int(g.limit), "1" if g.hard else "0", int(g.ttl_s)]
        keys = [self._k(b.key) for b in buckets] + [self._k(g.key) for g in budgets]
        try:
            answer = await self.run(lambda: self.scripts.admit(keys=keys, args=args))
        except Unavailable:
            if self.on_failure == "fail_closed":
                what = " and ".join(w for w, on in (("rate limits", buckets), ("budgets", budgets)) if on)
                raise self._unavailable(f"check the {what}") from None
            for g in budgets:
                self._blind[g.key] = self._blind.get(g.key, 0) + amount
            return (RateDecision(True, 0.0, (), degraded=True),
                    BudgetDecision(True, None, (0,) * len(budgets), degraded=True))
        code = int(answer[0])
        if code == 1:
            wait = float(answer[1])
            denied = tuple(buckets[int(i) - 1].key for i in answer[2:])
            return RateDecision(False, None if wait < 0 else wait, denied), BudgetDecision(True, None, ())
        if code == 2:
            refused = int(answer[1])
            used = tuple(int(x) for x in answer[2:])
            return RateDecision(True, 0.0, ()), BudgetDecision(False, budgets[refused - 1].key, used)
        return RateDecision(True, 0.0, ()), BudgetDecision(True, None, tuple(int(x) for x in answer[1:]))

    async def finish(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], reserved: int, actual: int
    ) -> None:
        if not buckets and not budgets:
            return
        releases = self._releases(budgets, reserved)
        try:
            await self.run(self._finish_op(buckets, budgets, releases, actual))
        except Unavailable:
            for b in buckets:
                self._keep_charge(b)
            for g, release in zip(budgets, releases, strict=True):
                self._keep_settle(g, release, actual)

    def _finish_op(self, buckets: Sequence[Bucket], budgets: Sequence[Budget], releases: Sequence[int],
                   actual: int) -> Callable[[], Awaitable[Any]]:
        args: list[Any] = [len(buckets), int(actual)]
        for b in buckets:
            args += [b.capacity, b.per_s, b.cost]
        for g, release in zip(budgets, releases, strict=True):
            args += [int(release), int(g.ttl_s)]
        keys = [self._k(b.key) for b in buckets] + [self._k(g.key) for g in budgets]
        return lambda: self.scripts.finish(keys=keys, args=args)

    def _releases(self, budgets: Sequence[Budget], reserved: int) -> list[int]:
        """What Redis must release per budget. What was reserved blind (while degraded) was never added
        in Redis: it is released here first, so Redis only ever releases what it holds. Summed over all
        settlements this is exact."""
        releases = []
        for b in budgets:
            blind = min(self._blind.get(b.key, 0), reserved)
            if blind:
                self._blind[b.key] -= blind
                if not self._blind[b.key]:
                    del self._blind[b.key]
            releases.append(reserved - blind)
        return releases

    def _keep_charge(self, bucket: Bucket) -> None:
        held = self._charges.get(bucket.key)
        cost = bucket.cost + (held.cost if held else 0.0)
        self._charges[bucket.key] = Bucket(bucket.key, bucket.capacity, bucket.per_s, cost)

    def _keep_settle(self, budget: Budget, release: int, actual: int) -> None:
        _, r, a = self._settles.get(budget.key, (budget, 0, 0))
        self._settles[budget.key] = (budget, r + release, a + actual)

    async def spent(self, budgets: Sequence[Budget]) -> list[tuple[int, int]]:
        async def read() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                for b in budgets:
                    pipe.hmget(self._k(b.key), "spent", "reserved")
                return await pipe.execute()

        if not budgets:
            return []
        try:
            rows = await self.run(read)
        except Unavailable:
            if self.on_failure == "fail_closed":
                raise self._unavailable("read the budgets") from None
            return [(0, 0)] * len(budgets)
        return [(int(s or 0), int(r or 0)) for s, r in rows]

    # -- exact cache -----------------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        try:
            raw: bytes | None = await self.run(lambda: self.client.get(self._k(key)))
        except Unavailable:
            return None
        return raw

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        ms = max(1, round(ttl_s * 1000))
        try:
            await self.run(lambda: self.client.set(self._k(key), value, px=ms))
        except Unavailable:
            return

    # -- semantic cache vectors ------------------------------------------------------------------------

    async def vectors_add(self, ns: str, entry: str, vector: np.ndarray, ttl_s: float) -> None:
        from ._vectors import unit

        args = [self.max_vectors, entry, unit(vector).tobytes(), max(1, round(ttl_s * 1000))]
        try:
            await self.run(lambda: self.scripts.vectors_add(keys=[self._k("vec:" + ns)], args=args))
        except Unavailable:
            return

    async def vectors_search(
        self, ns: str, vector: np.ndarray, threshold: float, limit: int = 5
    ) -> list[tuple[str, float]]:
        from ._vectors import unit

        query = unit(vector)
        mirror = self._mirrors.get(ns)
        if mirror is None:
            mirror = self._mirrors[ns] = _Mirror()
            while len(self._mirrors) > self.max_mirrors:
                self._mirrors.popitem(last=False)
        self._mirrors.move_to_end(ns)
        try:
            await self.run(lambda: self._catch_up(ns, mirror))
        except Unavailable:
            return []
        if mirror.table is None:
            return []
        return mirror.table.search(query, threshold, limit, time.time() + self._offset_s)

    async def _catch_up(self, ns: str, mirror: _Mirror) -> None:
        import numpy as np

        from ._vectors import VectorTable

        key = self._k("vec:" + ns)
        while True:
            start = "-" if mirror.last == (0, -1) else f"({mirror.last[0]}-{mirror.last[1]}"
            rows = await self.client.xrange(key, min=start, max="+", count=PAGE)
            for raw_id, fields in rows:
                ms, seq = (int(x) for x in raw_id.split(b"-"))
                if (ms, seq) <= mirror.last:
                    continue  # a concurrent search applied it already
                mirror.last = (ms, seq)
                v = np.frombuffer(fields[b"v"], dtype=np.float32)
                expires_at = (ms + int(fields[b"t"])) / 1000
                if mirror.table is None or mirror.table.newest_expiry <= time.time() + self._offset_s:
                    mirror.table = VectorTable(self.max_vectors)  # nothing alive: start afresh
                if mirror.table.dim not in (None, v.shape[0]):
                    continue  # written with another embedding model: cannot be compared
                mirror.table.add(fields[b"e"].decode(), v, expires_at)
            if len(rows) < PAGE:
                return

    # -- circuit breakers ------------------------------------------------------------------------------

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
    ) -> SharedBreaker:
        params = breaker_params(failure_ratio=failure_ratio, min_calls=min_calls, window_s=window_s,
                                cooldown_s=cooldown_s, probes=probes, buckets=buckets)
        held = self._breakers.get(key)
        if held is not None:
            if held.params != params:
                raise ValueError(f"breaker {key!r} exists with other parameters: {held.params}")
            return held
        breaker = self._breakers[key] = SharedBreaker(self, key, self._k(key), params)
        return breaker

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._poll_once()
            except Unavailable:
                continue
            except Exception:  # a bug must not stop the poll for good
                log.exception("the shared state's poll failed")

    async def _poll_once(self) -> None:
        """Refresh every breaker's mirror in one round trip; while degraded, this is also the probe
        that finds Redis back (and replays what was kept) when no request comes."""
        breakers = list(self._breakers.values())
        if not breakers:
            if self.degraded:
                await self.run(self.client.ping)
            return

        async def read() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.time()
                for b in breakers:
                    pipe.hmget(b.redis_key, "state", "gen", "opened")
                return await pipe.execute()

        local = time.time()
        (seconds, micros), *rows = await self.run(read)
        now = seconds + micros / 1e6
        self._offset_s = now - local
        for b, (state, gen, opened) in zip(breakers, rows, strict=True):
            if state is None or gen is None:
                b.sync(None, None, 0.0)
                continue
            left = float(opened or 0) + float(b.params["cooldown_s"]) - now if int(state) == 1 else 0.0
            b.sync(int(state), int(gen), max(0.0, left))
