"""The Gateway: the whole runtime as a Python object. The HTTP server is a thin layer over it."""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..config import BreakerSpec, Config, load_config
from ..errors import ProviderError, UnknownFeature
from ..providers import available_kinds, get_provider_class
from ..store import Store, TraceWriter
from .call import Call, ChunkStream
from .feature import Feature
from .pipeline import build_pipeline, build_stages
from .resilience import Backoff, CircuitBreaker
from .stages import Route


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished answer: the OpenAI-format body and what happened to get it."""

    body: dict[str, Any]
    trace_id: str
    route: str | None
    attempts: int

    @property
    def content(self) -> str | None:
        try:
            return self.body["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class InvokeResult:
    output: Any
    trace_id: str
    route: str | None
    attempts: int


class StreamReply:
    """``async for chunk in gateway.stream(...)``: OpenAI chunk dicts. ``trace_id`` is known at once,
    ``route`` once the first chunk has arrived. Use ``async with`` (or ``aclose()``) to stop early and
    have the trace written at once; a loop left with ``break`` is closed when the generator is collected."""

    def __init__(self, gateway: Gateway, call: Call) -> None:
        self._gateway = gateway
        self.call = call
        self._stream: ChunkStream | None = None

    @property
    def trace_id(self) -> str:
        return self.call.trace_id

    @property
    def route(self) -> str | None:
        return self.call.route

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        if self._stream is not None:
            raise RuntimeError("a StreamReply can be iterated once")
        self._stream = await self._gateway.run(self.call)
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> StreamReply:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Gateway:
    """Load a config, then ``await chat(...)``, ``stream(...)``, ``await invoke(...)``, ``await embed(...)``.

    Connections and storage open on first use (or ``await start()``); ``await aclose()`` (or
    ``async with``) finishes writing traces. Sleep, clock and random source are injectable for tests.
    """

    def __init__(
        self,
        config: Config,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.providers = self._build_providers(config)
        self.store = Store(config.model.storage)
        spec = config.model.traces
        self.writer = TraceWriter(
            self.store,
            flush_interval_s=spec.flush_interval_s,
            batch_size=spec.batch_size,
            max_pending=spec.max_pending,
        )
        self.router = Route(self.providers, sleep=sleep, clock=clock)
        self._breakers: dict[tuple[str, str, BreakerSpec], CircuitBreaker] = {}
        self.features: dict[str, Feature] = {}
        for name, fspec in config.features.items():
            breakers = [self._breaker(r.provider, r.model, fspec.circuit_breaker, clock) for r in fspec.route]
            b = fspec.backoff
            backoff = Backoff(b.base_s, b.max_s, b.max_retry_after_s, rand)
            feature = Feature.build(name, fspec, breakers, backoff)
            feature.pipeline = build_pipeline(build_stages(fspec, submit=self.writer.submit), self.router)
            self.features[name] = feature
        self.ready = False
        self.draining = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: Any) -> Gateway:
        return cls(load_config(path), **kwargs)

    @staticmethod
    def _build_providers(config: Config) -> dict[str, Any]:
        providers: dict[str, Any] = {}
        for name, spec in config.providers.items():
            try:
                cls = get_provider_class(spec.kind)
            except KeyError:
                raise config.problem(
                    ("providers", name, "kind"),
                    f"unknown provider kind {spec.kind!r} (available: {', '.join(available_kinds())})",
                ) from None
            try:
                settings = cls.Settings.model_validate(spec.settings, context={"base_dir": config.base_dir})
            except ValidationError as exc:
                raise config.invalid(exc, ("providers", name)) from None
            providers[name] = cls(name, settings)
        return providers

    def _breaker(self, provider: str, model: str, spec: BreakerSpec, clock: Callable[[], float]) -> CircuitBreaker:
        # One breaker per provider+model, shared by the features that declare the same policy for it.
        key = (provider, model, spec)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(
                failure_ratio=spec.failure_ratio,
                min_calls=spec.min_calls if spec.enabled else sys.maxsize,  # disabled: can never trip
                window_s=spec.window_s,
                cooldown_s=spec.cooldown_s,
                probes=spec.half_open_probes,
                clock=clock,
            )
        return self._breakers[key]

    def breaker_states(self) -> dict[str, str]:
        return {f"{p}/{m}": b.state.value for (p, m, _), b in self._breakers.items()}

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.ready:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.ready:
                return
            await asyncio.to_thread(self.store.migrate)
            for provider in self.providers.values():
                await provider.start()
            await self.writer.start()
            atexit.register(self.writer.flush_sync)
            self.ready = True

    async def check_providers(self) -> None:
        """Start and close every provider once, so that what only shows when it starts (an in-process
        model's import) is reported now, as a config problem at the provider's line."""
        for name, provider in self.providers.items():
            try:
                await provider.start()
            except ProviderError as exc:
                raise self.config.problem(("providers", name), exc.message) from None
            finally:
                await provider.aclose()

    async def aclose(self) -> None:
        """Write every pending trace and close connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        await self.writer.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        atexit.unregister(self.writer.flush_sync)
        await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls -------------------------------------------------------------------------------------

    def feature(self, name: str) -> Feature:
        try:
            return self.features[name]
        except KeyError:
            known = ", ".join(sorted(self.features))
            raise UnknownFeature(f"no feature named {name!r} (known: {known})", param="model") from None

    def new_call(
        self,
        feature: str,
        op: str,
        body: dict[str, Any],
        *,
        stream: bool = False,
        input: Any = None,
        metadata: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> Call:
        call = Call(self.feature(feature), op, body, stream=stream, input=input, metadata=metadata or {})
        if trace_id:
            call.trace_id = trace_id
        return call

    async def run(self, call: Call) -> Any:
        """Run a call through its feature's pipeline: a completion dict, or a ChunkStream if streaming."""
        if not self.ready:
            await self.start()
        return await call.feature.pipeline(call)

    async def chat(self, feature: str, messages: list[dict[str, Any]], **params: Any) -> Reply:
        call = self.new_call(feature, "chat", {"messages": messages, **params})
        body = await self.run(call)
        return Reply(body, call.trace_id, call.route, len(call.attempts))

    def stream(self, feature: str, messages: list[dict[str, Any]], **params: Any) -> StreamReply:
        return StreamReply(self, self.new_call(feature, "chat", {"messages": messages, **params}, stream=True))

    async def invoke(self, feature: str, input: Any) -> InvokeResult:
        call = self.new_call(feature, "invoke", {}, input=input)
        await self.run(call)
        return InvokeResult(call.output, call.trace_id, call.route, len(call.attempts))

    async def embed(self, feature: str, input: Any, **params: Any) -> Reply:
        call = self.new_call(feature, "embed", {"input": input, **params})
        body = await self.run(call)
        return Reply(body, call.trace_id, call.route, len(call.attempts))

    # -- records -----------------------------------------------------------------------------------

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        await self.writer.flush()  # a trace asked for right after its call is on its way to the store
        return await asyncio.to_thread(self.store.get_trace, trace_id)
