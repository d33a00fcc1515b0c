"""The one object every request becomes, whatever door it came in by."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ProviderError, ShipyardError, TransientProviderError, error_class_name

if TYPE_CHECKING:
    from .feature import Feature


_trace_random = random.Random()  # seeded from os.urandom, and again in every forked child
os.register_at_fork(after_in_child=_trace_random.seed)


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

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = self.t0 + self.feature.spec.deadline_s

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def add_usage(self, usage: Any) -> None:
        """Count a provider's token usage; a call that asked twice (a repair) used both."""
        if not isinstance(usage, dict):
            return
        total = self.usage or {}
        self.usage = {
            k: int(total.get(k) or 0) + int(usage.get(k) or 0)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "at_ms": round(self.elapsed_ms(), 3), **fields})


class ChunkStream:
    """A provider stream whose first chunk has arrived, so the route that serves it is settled.

    Iterating yields the first chunk, then the rest, each under an idle timeout. It calls ``on_close``
    once, whether the stream ended, broke, or the consumer stopped early, so the trace is always written.
    """

    __slots__ = ("_closed", "_first", "_idle_s", "_on_close", "_rest", "call")

    def __init__(
        self,
        call: Call,
        first: dict[str, Any],
        rest: AsyncIterator[dict[str, Any]],
        idle_s: float,
    ) -> None:
        self.call = call
        self._first: dict[str, Any] | None = first
        self._rest = rest
        self._idle_s = idle_s
        self._on_close: list[Callable[[Call], None]] = []
        self._closed = False

    def on_close(self, callback: Callable[[Call], None]) -> None:
        self._on_close.append(callback)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        call = self.call
        try:
            if self._first is not None:
                first, self._first = self._first, None
                self._note_usage(first)
                yield first
            while True:
                try:
                    async with asyncio.timeout(self._idle_s):
                        chunk = await anext(self._rest)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise TransientProviderError(
                        f"{call.route} sent nothing for {self._idle_s:g}s in the middle of a stream"
                    ) from None
                self._note_usage(chunk)
                yield chunk
            call.status = "ok" if call.status == "pending" else call.status
        except ProviderError as exc:
            call.status = "error"
            call.error = exc
            call.event("stream_broken", error_type=error_class_name(exc), message=exc.message)
            raise
        except GeneratorExit:
            if call.status == "pending":
                call.status = "client_closed"
            raise
        except asyncio.CancelledError:
            if call.status == "pending":
                call.status = "client_closed"
            raise
        finally:
            await self.aclose()

    def _note_usage(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage:
            self.call.add_usage(usage)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        except Exception:  # noqa: BLE001 - closing a broken upstream must not mask the real outcome
            pass
        finally:
            if self.call.status == "pending":
                self.call.status = "client_closed"
            for callback in self._on_close:
                callback(self.call)
