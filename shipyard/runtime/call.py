"""The one object every request becomes, whatever door it came in by."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..economics.pricing import Price, estimate_prompt_tokens
from ..errors import DeadlineExceeded, ShipyardError, TransientProviderError, error_class_name
from ..monitor.refusal import HEAD_CHARS
from ..monitor.refusal import detect as detect_refusal

if TYPE_CHECKING:
    from ..access import Principal
    from .feature import Feature


_log = logging.getLogger("shipyard.runtime")
_trace_random = random.Random()  # seeded from os.urandom, and again in every forked child
os.register_at_fork(after_in_child=_trace_random.seed)


SEVERITIES = ("minor", "major", "critical")


def new_trace_id() -> str:
    """32 hex digits, the W3C / OpenTelemetry trace-id shape. Unique, not secret: a seeded PRNG is
    ~10x cheaper than a getrandom() syscall per request (measured with py-spy under load)."""
    return f"{_trace_random.getrandbits(128):032x}"


@dataclass(slots=True)
class Attempt:
    """One try at one route."""

    provider: str
    model: str
    outcome: str  # ok | error | skipped
    latency_ms: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    offset_ms: float = 0.0  # when it started, from the start of the call
    span_id: int | None = None  # sent to the provider in a traceparent; its span gets this id

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 3),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "status_code": self.status_code,
            "offset_ms": round(self.offset_ms, 3),
        }


@dataclass(slots=True, eq=False)
class Call:
    """A request on its way through a feature's pipeline, and the record of what happened to it."""

    feature: Feature
    op: str  # chat | invoke | embed
    body: dict[str, Any]
    stream: bool = False
    input: Any = None
    trace_id: str = field(default_factory=new_trace_id)
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    route: str | None = None  # provider/model that served, or "fallback"
    route_index: int | None = None
    route_from: int = 0  # routes before this index are not tried (the output contract moved on)
    route_only: int | None = None  # try only this route (a repair re-ask)
    status: str = "pending"  # ok | fallback | error | cancelled | client_closed
    error: ShipyardError | None = None
    usage: dict[str, Any] | None = None
    output: Any = None
    streamed: bool = False  # a chunk reached the client: its HTTP status was 200, whatever follows
    api_key: str | None = None  # as the client sent it; the Admit stage resolves it
    principal: Principal | None = None  # who the call is for (set by Admit, or by a trusted caller)
    cache_control: str = ""  # the client's Cache-Control: no-cache skips lookups, no-store skips both
    cache: str | None = None  # exact | semantic: a cache answered
    price: Price | None = None  # of the route that served; None: unpriced
    cost_nano: int | None = None  # USD * 1e9 of every attempt that used tokens; None: unknown
    cost_estimated: bool = False  # some tokens were counted by estimate, not by the provider
    retry_after: float | None = None  # for a 429: when to come back
    extend_budget: Callable[[], Awaitable[None]] | None = None  # reserve for one more paid attempt (Limit)
    reserved_attempts: int = 1  # paid attempts the budget reservation covers
    paid_attempts: int = 0  # attempts that came back with an answer (billed)
    subject: str | None = None  # who the call is about (erasure: shipyard forget --subject)

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = self.t0 + self.feature.spec.deadline_s

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def add_usage(self, usage: Any, *, estimated: bool = False, price: Price | None = None) -> None:
        """Count a provider's token usage and its cost at ``price`` (default: the serving route's); a call
        that asked twice (a repair, a hedge) used both."""
        if not isinstance(usage, dict):
            return
        price = price if price is not None else self.price
        total = self.usage or {}
        self.usage = {
            k: int(total.get(k) or 0) + int(usage.get(k) or 0)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
        if estimated:
            self.cost_estimated = True
        if price is not None:
            cost = price.cost_nano(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            self.cost_nano = (self.cost_nano or 0) + cost

    def add_prompt_estimate(self, price: Price | None, completion_chars: int = 0) -> None:
        """Tokens the provider did not report (a stream without usage, a cancelled hedge), estimated."""
        prompt = estimate_prompt_tokens(self.body)
        completion = (completion_chars + 3) // 4
        self.add_usage(
            {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            estimated=True,
            price=price,
        )

    @property
    def cost_usd(self) -> float | None:
        return None if self.cost_nano is None else self.cost_nano / 1e9

    @property
    def tenant(self) -> str | None:
        return self.principal.tenant if self.principal is not None else None

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "at_ms": round(self.elapsed_ms(), 3), **fields})

    def finding(self, guard: str, rule: str, *, severity: str, action: str, where: str, **fields: Any) -> None:
        """A guard's verdict on this call (PII, injection, a policy rule, the output contract): an event of
        kind ``finding``, the one shape evaluation, metrics and alerts read. ``fields`` never hold the
        text that was caught, only what names it (entity types, rule reasons, counts)."""
        self.event("finding", guard=guard, rule=rule, severity=severity, action=action, where=where, **fields)

    @property
    def severity(self) -> str | None:
        """The worst severity among this call's findings (critical > major > minor), None without any."""
        worst = -1
        for event in self.events:
            if event["kind"] == "finding":
                worst = max(worst, SEVERITIES.index(event["severity"]))
        return SEVERITIES[worst] if worst >= 0 else None


class Background:
    """Work a response must not wait for (settling counters, storing a streamed answer in the cache),
    kept referenced while it runs and awaited on shutdown so that nothing is lost on a clean stop."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("background work after a call failed: %r", task.exception())

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


class ChunkStream:
    """A provider stream whose first chunk has arrived, so the route that serves it is settled.

    Iterating yields the first chunk, then the rest, each under an idle timeout. It calls ``on_close``
    once, whether the stream ended, broke, or the consumer stopped early, so the trace is always written.
    """

    __slots__ = (
        "_chars", "_closed", "_finish", "_first", "_got_usage", "_head", "_held", "_idle_s", "_kept", "_on_close",
        "_parts", "_refusal", "_rest", "_transforms", "_usage_wanted", "call", "estimate",
    )

    def __init__(
        self,
        call: Call,
        first: dict[str, Any],
        rest: AsyncIterator[dict[str, Any]],
        idle_s: float,
        usage_wanted: bool = True,
    ) -> None:
        self.call = call
        self._first: dict[str, Any] | None = first
        self._rest = rest
        self._idle_s = idle_s
        self._usage_wanted = usage_wanted
        self._on_close: list[Callable[[Call], None]] = []
        self._closed = False
        self._chars = 0
        self._kept: list[dict[str, Any]] | None = None
        self._parts: list[str] | None = None
        self._head = ""  # the start of the answer, and how it finished: enough to tell a refusal
        self._finish: str | None = None
        self._refusal = False
        self._held: list[Callable[[], None]] = []
        self._got_usage = False
        self._transforms: list[Callable[[dict[str, Any]], dict[str, Any]]] = []
        self.estimate = True  # a provider's stream: estimate the tokens if it never reports usage

    def on_close(self, callback: Callable[[Call], None]) -> None:
        self._on_close.append(callback)

    def transform(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Rewrite each chunk on its way to the consumer (a guard); what is counted and kept for the
        cache is the chunk as the provider sent it."""
        self._transforms.append(fn)

    def _transformed(self, chunk: dict[str, Any]) -> dict[str, Any]:
        for fn in self._transforms:
            chunk = fn(chunk)
        return chunk

    def hold(self, release: Callable[[], None]) -> None:
        """Something the stream holds until it ends, whether it is read or discarded (a route's slot)."""
        self._held.append(release)

    @property
    def chars(self) -> int:
        """Characters of answer text passed on so far (for an estimate)."""
        return self._chars

    async def discard(self) -> None:
        """A stream nobody will read (the attempt that lost a hedge): close the upstream and give back what
        it holds, without touching the call's record (its winner writes that)."""
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        except Exception:  # noqa: BLE001, S110 - a loser's upstream failing to close changes nothing
            pass
        finally:
            for release in self._held:
                release()

    def keep_chunks(self) -> list[dict[str, Any]]:
        """From now on, every chunk passed on is also appended to the returned list (for a cache)."""
        if self._kept is None:
            self._kept = []
        return self._kept

    def collect_text(self) -> None:
        """From now on, keep the answer's text as the provider sent it (``text``), for the trace."""
        if self._parts is None:
            self._parts = []

    @property
    def text(self) -> str | None:
        return None if self._parts is None else "".join(self._parts)

    def refusal(self) -> str | None:
        """How the answer streamed so far is a refusal (shipyard/monitor/refusal.py), or None."""
        return detect_refusal(self._head, finish_reason=self._finish, refusal=self._refusal)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _next(self) -> dict[str, Any]:
        """The next chunk, within the idle timeout and what is left of the feature's deadline."""
        call = self.call
        remaining = call.remaining()
        try:
            async with asyncio.timeout(max(0.0, min(self._idle_s, remaining))):
                return await anext(self._rest)
        except TimeoutError:
            if remaining <= self._idle_s:
                raise DeadlineExceeded(
                    f"{call.feature.name} did not finish streaming within its deadline of "
                    f"{call.feature.spec.deadline_s:g}s"
                ) from None
            raise TransientProviderError(
                f"{call.route} sent nothing for {self._idle_s:g}s in the middle of a stream"
            ) from None

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        call = self.call
        try:
            if self._first is not None:
                first, self._first = self._first, None
                if self._keep(first):
                    call.streamed = True
                    yield self._transformed(first)
            while True:
                try:
                    chunk = await self._next()
                except StopAsyncIteration:
                    break
                if self._keep(chunk):
                    call.streamed = True
                    yield self._transformed(chunk)
            call.status = "ok" if call.status == "pending" else call.status
        except ShipyardError as exc:
            self._broken(exc)
            raise
        except GeneratorExit:
            if call.status == "pending":
                call.status = "client_closed"
            raise
        except asyncio.CancelledError:
            if call.status == "pending":
                call.status = "client_closed"
            raise
        except Exception as exc:  # an adapter bug: the client still gets a clean error event
            call.event("internal_error", error_type=type(exc).__name__, message=str(exc)[:500])
            err = ShipyardError(f"internal error ({type(exc).__name__}) in the middle of a stream; see the trace")
            self._broken(err)
            raise err from exc
        finally:
            await self.aclose()

    def _broken(self, exc: ShipyardError) -> None:
        self.call.status = "error"
        self.call.error = exc
        self.call.event("stream_broken", error_type=error_class_name(exc), message=exc.message)

    def _keep(self, chunk: dict[str, Any]) -> bool:
        """Count usage; pass a usage-only chunk on only to a caller that asked for one (as OpenAI does)."""
        usage = chunk.get("usage")
        if usage:
            self._got_usage = True
            self.call.add_usage(usage)
            if not chunk.get("choices"):
                return self._usage_wanted
        if self._kept is not None:
            self._kept.append(chunk)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                self._chars += len(content)
                if self._parts is not None:
                    self._parts.append(content)
                if len(self._head) < HEAD_CHARS:
                    self._head += content
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
            if delta.get("refusal"):
                self._refusal = True
            for tool_call in delta.get("tool_calls") or ():
                args = (tool_call.get("function") or {}).get("arguments")
                if isinstance(args, str):
                    self._chars += len(args)
        return True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        except Exception:  # noqa: BLE001, S110 - closing a broken upstream must not mask the real outcome
            pass
        finally:
            call = self.call
            if call.status == "pending":
                call.status = "client_closed"
            if self.estimate and not self._got_usage and call.route_index is not None:
                call.add_prompt_estimate(call.price, self._chars)
            for release in self._held:
                release()
            for callback in self._on_close:
                callback(self.call)
