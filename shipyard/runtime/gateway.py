"""The Gateway: the whole runtime as a Python object. The HTTP server is a thin layer over it."""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..access import KeyRing, Principal
from ..config import BreakerSpec, Config, RetentionSpec, load_config
from ..economics.pricing import Price, PriceTable
from ..economics.quotas import rate_rules
from ..errors import ProviderError, UnknownFeature
from ..monitor.alerts import Monitor
from ..monitor.metrics import Metrics
from ..monitor.tracing import Tracing, current_parent, parse_traceparent
from ..providers import available_kinds, get_provider_class
from ..state import open_state
from ..store import Store, TraceWriter, retention
from ..store.audit import digest
from ..store.content import ContentKeyError
from ..units import TRAFFIC
from .call import Call, ChunkStream
from .feature import Feature
from .limits import budget_rules_for
from .pipeline import Services, build_pipeline, build_stages
from .resilience import Backoff
from .route import Route

_log = logging.getLogger("shipyard.gateway")

@dataclass(frozen=True, slots=True)
class Reply:
    """A finished answer: the OpenAI-format body and what happened to get it."""

    body: dict[str, Any]
    trace_id: str
    route: str | None
    attempts: int
    cost_usd: float | None = None
    cache: str | None = None

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
    cost_usd: float | None = None
    cache: str | None = None


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
        span_exporter: Any = None,
    ) -> None:
        """``span_exporter``: an OpenTelemetry SpanExporter for the call spans in place of OTLP (tests)."""
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
        model = config.model
        self.state = open_state(model.state.url, on_failure=model.state.on_failure, prefix=model.state.prefix)
        self.keys = KeyRing(self.store)
        self.prices = PriceTable({k: Price(v.input, v.output) for k, v in model.pricing.items()})
        self.embedder: Any = None
        if any(f.cache is not None and f.cache.semantic is not None for f in config.features.values()):
            from ..economics.semantic import shared_embedder

            self.embedder = shared_embedder()
        self.services = Services(
            submit=self.writer.submit,
            keys=self.keys,
            state=self.state,
            auth=model.auth,
            tenants={
                name: (
                    rate_rules("tenant", name, t.limits.rpm, t.limits.tpm) if t.limits else [],
                    budget_rules_for("tenant", name, t.budget),
                )
                for name, t in model.tenants.items()
            },
            embedder=self.embedder,
        )
        self._breakers: dict[tuple[str, str, BreakerSpec], Any] = {}
        self.online: dict[str, Any] = {}
        for name, fspec in config.features.items():
            if fspec.eval is not None and fspec.eval.online is not None:
                self.online[name] = self._online_evaluator(name, fspec)
                self.services.observers[name] = self.online[name].observe
        self.metrics = Metrics.for_gateway(self)  # GET /metrics; its own registry, per gateway
        self.tracing = Tracing.from_config(config, span_exporter)  # None unless OTLP is configured
        self.services.recorders.append(self.metrics.record)
        self.services.rejected.append(self.metrics.rejected)
        if self.tracing is not None:
            self.services.recorders.append(self.tracing.record)
        self.features: dict[str, Feature] = {}
        for name, fspec in config.features.items():
            breakers = [self._breaker(r.provider, r.model, fspec.circuit_breaker) for r in fspec.route]
            b = fspec.backoff
            backoff = Backoff(b.base_s, b.max_s, b.max_retry_after_s, rand)
            prices = [self._price(name, i) for i in range(len(fspec.route))]
            feature = Feature.build(name, fspec, breakers, backoff, prices)
            feature.retention = model.retention_of(name)
            if (fspec.drift is not None and feature.retention.store_content == "none"
                    and not fspec.drift.reference.startswith(TRAFFIC)):
                raise config.problem(("features", name, "drift", "reference"),
                                     "drift compares the inputs of recorded traffic with this file, but the "
                                     "feature keeps no inputs: set retention: {store_content: redacted}, or "
                                     "compare outcomes only against a window of traffic (reference: "
                                     "traffic:START..END)")
            self._check_content_key(name, feature.retention)
            feature.pipeline = build_pipeline(build_stages(feature, self.services), self.router)
            self.features[name] = feature
        self.store.use_key_envs({name: f.retention.key_env for name, f in self.features.items()})
        self.ready = False
        self.draining = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False
        self._purger: asyncio.Task[None] | None = None
        self.jobs = False
        """Run the scheduled jobs (retention purge, alert evaluation) once started: the server sets it."""
        self._watcher: asyncio.Task[None] | None = None
        self.monitor = Monitor(config, self.store.incidents, self.services.background, self.store.evals, self.store)

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

    def _online_evaluator(self, name: str, spec: Any) -> Any:
        """The background scorer of a feature's sampled production calls (eval.online)."""
        from ..eval.online import OnlineEvaluator
        from ..eval.runner import Context

        online = spec.eval.online
        checks = [c for c in spec.eval.checks if online.checks is None or c.name in online.checks]
        return OnlineEvaluator(name, checks, share=online.sample, usd_per_day=online.usd_per_day,
                               segments=spec.segments, ctx=Context(self, name),
                               background=self.services.background, evals=self.store.evals)

    def _check_content_key(self, feature: str, retention: RetentionSpec) -> None:
        """A feature that stores its content encrypted needs its key now, not at the first write."""
        if retention.store_content != "encrypted":
            return
        try:
            self.store.content_sealer(retention.key_env, required=True)
        except ContentKeyError as exc:
            where = ("features", feature, "retention") if self.config.features[feature].retention else ("retention",)
            raise self.config.problem(where, exc.message) from None

    def _breaker(self, provider: str, model: str, spec: BreakerSpec) -> Any:
        # One breaker per provider+model, shared by the features that declare the same policy for it
        # (and, with Redis state, by every replica).
        key = (provider, model, spec)
        if key not in self._breakers:
            policy = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]
            self._breakers[key] = self.state.breaker(
                f"breaker:{provider}/{model}:{policy}",
                failure_ratio=spec.failure_ratio,
                min_calls=spec.min_calls if spec.enabled else sys.maxsize,  # disabled: can never trip
                window_s=spec.window_s,
                cooldown_s=spec.cooldown_s,
                probes=spec.half_open_probes,
            )
        return self._breakers[key]

    def _price(self, feature: str, index: int) -> Price | None:
        """A route's price: config pricing, else the built-in table; in-process models cost nothing
        unless priced. A feature with a budget must be able to price every route."""
        spec = self.config.features[feature]
        route = spec.route[index]
        price = self.prices.lookup(route.provider, route.model)
        if price is None and self.config.providers[route.provider].kind == "python":
            price = Price(0.0, 0.0)
        if price is None and spec.budget is not None:
            raise self.config.problem(
                ("features", feature, "budget"),
                f"route {route.label} has no price, so its calls cannot be counted against the budget; "
                f"add it under pricing: (\"{route.label}\": {{input: USD_PER_M, output: USD_PER_M}})",
            )
        return price

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
            await asyncio.to_thread(self._audit_config)
            await asyncio.to_thread(self._audit_policies)
            await self.state.start()
            for provider in self.providers.values():
                await provider.start()
            if self.embedder is not None:
                await asyncio.to_thread(self.embedder.load)
            await self.writer.start()
            atexit.register(self.writer.flush_sync)
            if self.jobs:  # the server's: a notebook, a test or `shipyard eval run` purges and alerts nothing
                self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
                self._watcher = asyncio.get_running_loop().create_task(self._monitor_loop())
            self.ready = True

    @property
    def actor(self) -> str:
        """Who the audit log names for what the gateway does by itself."""
        return f"gateway:{socket.gethostname()}:{os.getpid()}"

    async def purge_expired(self, actor: str | None = None) -> dict[str, int]:
        """Delete the traces past their feature's retention now (the server does it on a schedule)."""
        await self.writer.flush()
        return await asyncio.to_thread(retention.purge, self.store, self.config.model, actor or self.actor)

    async def _purge_loop(self) -> None:
        """The scheduled purge: soon after start (a server restarted more often than the interval still
        purges), then every ``server.purge_interval_s``. A failure is logged and tried again next time."""
        interval = self.config.model.server.purge_interval_s
        delay = min(interval, 30.0)
        while True:
            await asyncio.sleep(delay)
            delay = interval
            try:
                deleted = await self.purge_expired()
            except Exception as exc:  # noqa: BLE001 - the store may be down; the next run tries again
                _log.warning("retention purge failed (will retry in %gs): %s", interval, exc)
                continue
            if deleted:
                _log.info("retention: purged %d expired trace(s) (%s)", sum(deleted.values()),
                          ", ".join(f"{k}: {v}" for k, v in sorted(deleted.items())))

    async def _monitor_loop(self) -> None:
        """Alerts and incidents, every ``monitor.interval_s``; a failure is logged and tried again."""
        interval = self.config.model.monitor.interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.writer.flush()
                for change in await self.monitor.evaluate():
                    _log.warning("incident %s", change)
            except Exception as exc:  # noqa: BLE001 - the store may be down; the next round tries again
                _log.warning("alert evaluation failed (will retry in %gs): %s", interval, exc)

    async def forget(self, subject: str, actor: str) -> dict[str, Any]:
        """Erase every trace about ``subject`` (and say so in the audit log)."""
        await self.writer.flush()  # a call just made about the subject is erased too
        return await asyncio.to_thread(retention.forget, self.store, subject, actor)

    def _audit_config(self) -> None:
        """``config.loaded`` in the audit log with the config file's sha256, or ``config.changed`` with
        before/after digests when it differs from the config the last start recorded."""
        path = self.config.file
        try:
            with open(path, "rb") as handle:
                content = handle.read()
        except OSError:  # a config parsed from text (tests, the Python API): digest what it says
            content = self.config.model.model_dump_json().encode()
        self.store.audit.record_config(
            self.actor,
            hashlib.sha256(content).hexdigest(),
            {"file": path, "features": sorted(self.features)},
        )

    def _audit_policies(self) -> None:
        """``policy.changed`` in the audit log for each feature whose guard section (injection, PII, policy
        rules) differs from the one last recorded for it, with the digests before and after (``before`` is
        null the first time a feature has a guard; ``after`` is null when a guard was removed)."""
        for name, spec in self.config.features.items():
            guard = spec.guard.model_dump(mode="json", by_alias=True) if spec.guard is not None else None
            self.store.audit.record_change(self.actor, "policy.changed", f"features.{name}.guard",
                                           digest(guard) if guard is not None else None, {"feature": name})

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
        for task in (self._purger, self._watcher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for evaluator in self.online.values():
            await evaluator.aclose()  # scoring that outlives a short grace is cancelled, not waited on
        await self.services.background.drain()
        await self.monitor.notifier.aclose()
        await self.writer.aclose()
        if self.tracing is not None:
            await self.tracing.aclose()  # every call has finished: export the last spans
        await self.state.aclose()
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

    def feature(self, name: str, *, reveal: bool = True) -> Feature:
        """The feature called ``name``; UnknownFeature lists the known ones only when ``reveal`` (a caller
        that has not shown a key yet must not learn what features exist)."""
        try:
            return self.features[name]
        except KeyError:
            known = f" (known: {', '.join(sorted(self.features))})" if reveal else ""
            raise UnknownFeature(f"no feature named {name!r}{known}", param="model") from None

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
        api_key: str | None = None,
        tenant: str | None = None,
        cache_control: str = "",
        subject: str | None = None,
    ) -> Call:
        """A call for ``feature``. The server passes the client's ``api_key``; a trusted in-process caller
        may name the ``tenant`` instead (no key needed: the process already holds the config).
        ``subject``: who the call is about (an end user, a customer), so ``shipyard forget --subject``
        can erase it; without one, a chat body's OpenAI ``user`` field is taken."""
        reveal = api_key is None or self.config.model.auth == "none"
        metadata = dict(metadata) if metadata else {}
        if self.tracing is not None:  # the caller's trace, which the call's spans join
            given = metadata.get("traceparent")
            parent = parse_traceparent(given) if isinstance(given, str) else None
            metadata["traceparent"] = parent if parent is not None else current_parent()
        call = Call(self.feature(feature, reveal=reveal), op, body, stream=stream, input=input, metadata=metadata)
        if trace_id:
            call.trace_id = trace_id
        if self.tracing is not None:
            call.metadata["trace_out"] = self.tracing.outbound(call)
        call.api_key = api_key
        if tenant is not None:
            call.principal = Principal(tenant=tenant, role="admin")
        elif api_key is None and self.config.model.auth == "keys":
            call.principal = Principal(tenant="local", role="admin")  # the Python API, in this process
        call.cache_control = cache_control.lower()
        user = body.get("user")
        call.subject = subject if subject is not None else (user if isinstance(user, str) and user else None)
        return call

    async def run(self, call: Call) -> Any:
        """Run a call through its feature's pipeline: a completion dict, or a ChunkStream if streaming."""
        if not self.ready:
            await self.start()
        return await call.feature.pipeline(call)

    async def chat(
        self, feature: str, messages: list[dict[str, Any]], *, tenant: str | None = None,
        subject: str | None = None, **params: Any
    ) -> Reply:
        call = self.new_call(feature, "chat", {"messages": messages, **params}, tenant=tenant, subject=subject)
        body = await self.run(call)
        return Reply(body, call.trace_id, call.route, len(call.attempts), call.cost_usd, call.cache)

    def stream(
        self, feature: str, messages: list[dict[str, Any]], *, tenant: str | None = None,
        subject: str | None = None, **params: Any
    ) -> StreamReply:
        call = self.new_call(feature, "chat", {"messages": messages, **params}, stream=True, tenant=tenant,
                             subject=subject)
        return StreamReply(self, call)

    async def invoke(
        self, feature: str, input: Any, *, tenant: str | None = None, subject: str | None = None
    ) -> InvokeResult:
        call = self.new_call(feature, "invoke", {}, input=input, tenant=tenant, subject=subject)
        await self.run(call)
        return InvokeResult(call.output, call.trace_id, call.route, len(call.attempts), call.cost_usd, call.cache)

    async def embed(
        self, feature: str, input: Any, *, tenant: str | None = None, subject: str | None = None, **params: Any
    ) -> Reply:
        call = self.new_call(feature, "embed", {"input": input, **params}, tenant=tenant, subject=subject)
        body = await self.run(call)
        return Reply(body, call.trace_id, call.route, len(call.attempts), call.cost_usd, call.cache)

    # -- records -----------------------------------------------------------------------------------

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        await self.writer.flush()  # a trace asked for right after its call is on its way to the store
        return await asyncio.to_thread(self.store.get_trace, trace_id)
