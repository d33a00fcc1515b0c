"""OpenTelemetry spans for every call and every attempt, exported by OTLP/HTTP when configured.

The spans are built after the fact, from the finished ``Call``: its start time, its attempts (each with
its offset from the start and its latency), status, usage and events. So the request path pays nothing
when tracing is off, and when it is on only a sampling test and an append to a queue
(``Tracing.record``); a worker thread turns the queue into spans, and the SDK's batch processor
exports them from its own thread.

The OTel trace id *is* the call's trace id (the 32 hex digits of ``x-shipyard-trace-id``), so a support
ticket's header leads straight to the trace in any OTLP backend. Sampling is decided on that id the
way OpenTelemetry's ``TraceIdRatioBased`` does (its low 64 bits), so every replica keeps the same calls.

Spans follow the GenAI semantic conventions: the call is a ``SERVER`` span named
``{gen_ai.operation.name} {feature}`` (the feature is the model a client asks Shipyard for), each
attempt a ``CLIENT`` span (``INTERNAL`` for an in-process model) named
``{gen_ai.operation.name} {model}`` with ``gen_ai.provider.name`` (and the older ``gen_ai.system``),
``gen_ai.request.model``, ``gen_ai.usage.*`` and ``error.type``; Shipyard's own attributes are under
``shipyard.*``. No prompt, answer or provider error message is ever put on a span: only what names
things (codes, counts, rule names), as in the trace store.

A tracing failure never breaks a call: it is logged once and the span is dropped. A collector that is
away is said once a minute at most, naming it and counting the span batches dropped (the SDK's exporter
would log a warning per retry and an error per batch, from its own thread: its records from our export
calls are kept out of the logs), and a stop gives the last spans ``CLOSE_S`` at most, then drops them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from ..errors import error_class_name

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from ..runtime.call import Attempt, Call

# The OpenTelemetry SDK is imported when tracing is configured, not before: a gateway without it does
# not pay for the import (~150 ms, a few MiB).

_log = logging.getLogger("shipyard.monitor")

DRAIN_S = 0.2
"""How often the worker turns queued calls into spans."""
MAX_PENDING = 20_000
"""Calls waiting to become spans; past it new ones are dropped (and counted)."""
OPERATIONS = {"chat": "chat", "invoke": "chat", "embed": "embeddings"}
"""gen_ai.operation.name by Call.op: a typed feature is a chat completion of its rendered prompt."""
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "python": "shipyard.python"}
"""gen_ai.provider.name by provider kind; another kind (a plugin) is named by itself."""
_MAX_TOKENS = ("max_tokens", "max_completion_tokens")
CLOSE_S = 5.0
"""The most a stop (``Gateway.aclose``) waits for the last spans to be exported: past it, retries stop and
what is left is dropped (counted and logged), so a collector that is away never holds a shutdown up (the
SDK's own flush would try every batch for ``export_timeout_s`` each: 72 s for 6,000 spans, measured)."""
WARN_EVERY_S = 60.0
"""While exports fail, one warning per this many seconds at most (per gateway)."""
EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",)
"""Where the SDK's OTLP/HTTP span exporter logs each retry and each failed batch."""


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What a span says of a configured provider."""

    name: str  # gen_ai.provider.name
    address: str | None = None
    port: int | None = None
    in_process: bool = False

    @classmethod
    def of(cls, kind: str, base_url: Any = None) -> ProviderInfo:
        address = port = None
        if isinstance(base_url, str) and base_url:
            try:
                parts = urlsplit(base_url)
                address = parts.hostname
                port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
            except ValueError:
                pass
        return cls(PROVIDER_NAMES.get(kind, kind), address, port, kind == "python")


def traces_endpoint(base: str) -> str:
    """An OTLP/HTTP base URL (``http://collector:4318``), as OTEL_EXPORTER_OTLP_ENDPOINT is written, with
    the traces path; a URL that already ends in ``/v1/traces`` is kept."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


class _Quiet(logging.Filter):
    """Keeps the OTLP exporter's own records out of the logs while Shipyard's exporter runs it on this
    thread (only then: the SDK's exporter used by anyone else logs as it always does), and hands the
    first few to it, to say what went wrong in its own, rate-limited, warning."""

    KEEP = 3

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        heard = getattr(self.local, "heard", None)
        if heard is None:
            return True
        if len(heard) < self.KEEP:
            args = record.args if isinstance(record.args, tuple) else ()
            error = next((a for a in args if isinstance(a, BaseException)), None)
            try:  # the error itself says most ("Connection refused"), else the whole message
                heard.append(f"{type(error).__name__}: {error}" if error is not None else record.getMessage())
            except Exception:  # noqa: BLE001 - a record that cannot be formatted is still kept out
                heard.append(str(record.msg))
        return False


_QUIET = _Quiet()


def _without_password(url: str) -> str:
    """A URL as logs may show it: ``user:secret@host`` becomes ``user:***@host``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def guarded_exporter(exporter: SpanExporter, endpoint: str | None = None) -> Any:
    """``exporter`` wrapped so that its failures are counted (``failures``, ``failed_spans``) and said at
    most every ``WARN_EVERY_S`` (naming ``endpoint``), without the SDK's record per retry."""
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(_QUIET)  # once: a filter already there is not added again
    return _guarded_class()(exporter, endpoint)


@functools.cache
def _guarded_class() -> type:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class GuardedExporter(SpanExporter):
        """Exports through ``inner``; a failed batch is dropped and counted. The first failure is a warning
        at once, later ones are summed into one warning per ``WARN_EVERY_S`` (and one when exports work
        again, and one at the stop). While stopping, the first failure drops everything left at once."""

        def __init__(self, inner: SpanExporter, endpoint: str | None, *, warn_every_s: float = WARN_EVERY_S,
                     clock: Any = time.monotonic) -> None:
            self.inner = inner
            self.endpoint = _without_password(endpoint) if endpoint else type(inner).__name__
            self.warn_every_s = warn_every_s
            self.clock = clock
            self.failures = 0  # span batches not delivered, since the start
            self.failed_spans = 0
            self._unsaid = 0  # batches (and spans) dropped since the last warning
            self._unsaid_spans = 0
            self._said_at = float("-inf")
            self._failing = False
            self._closing = False
            self._given_up = False  # stopping, and the collector failed or took too long: drop the rest
            self._inner_shut = False
            self._lock = threading.Lock()

        def export(self, spans: Any) -> SpanExportResult:
            if self._given_up:
                self._failed(len(spans), None)
                return SpanExportResult.FAILURE
            heard: list[str] = []
            _QUIET.local.heard = heard
            try:
                result = self.inner.export(spans)
            except Exception as exc:  # noqa: BLE001 - the batch processor would log it with a traceback
                heard.insert(0, repr(exc))
                result = SpanExportResult.FAILURE
            finally:
                _QUIET.local.heard = None
            if result is SpanExportResult.SUCCESS:
                if self._failing:
                    self._recovered()
                return result
            if self._closing:
                self._given_up = True
            self._failed(len(spans), heard[0] if heard else None)
            return SpanExportResult.FAILURE

        def _failed(self, spans: int, why: str | None) -> None:
            with self._lock:
                self.failures += 1
                self.failed_spans += spans
                self._unsaid += 1
                self._unsaid_spans += spans
                self._failing = True
                now = self.clock()
                if now - self._said_at < self.warn_every_s:
                    return
                self._said_at = now
                batches, dropped = self._unsaid, self._unsaid_spans
                self._unsaid = self._unsaid_spans = 0
            because = f" ({why[:300]})" if why else ""
            _log.warning("tracing: spans cannot be exported to %s%s; %d span batch(es) (%d spans) dropped "
                         "since the last warning; calls are not affected; next warning in %g s at the "
                         "earliest", self.endpoint, because, batches, dropped, self.warn_every_s)

        def _recovered(self) -> None:
            with self._lock:
                self._failing = False
                batches, dropped = self._unsaid, self._unsaid_spans
                self._unsaid = self._unsaid_spans = 0
                self._said_at = float("-inf")
            if batches:
                _log.warning("tracing: spans are exported to %s again; %d span batch(es) (%d spans) were "
                             "dropped since the last warning", self.endpoint, batches, dropped)
            else:
                _log.info("tracing: spans are exported to %s again", self.endpoint)

        def closing(self) -> None:
            """The stop begins: the first failure from now on drops what is left, without retries."""
            self._closing = True

        def give_up(self) -> None:
            """The stop took too long: drop what is left, and interrupt the exporter's retries."""
            self._given_up = True
            self.shutdown()

        def report(self) -> None:
            """At the stop: what was dropped since the last warning, if anything."""
            with self._lock:
                batches, dropped = self._unsaid, self._unsaid_spans
                self._unsaid = self._unsaid_spans = 0
            if batches:
                _log.warning("tracing: %d span batch(es) (%d spans) could not be exported to %s before the "
                             "stop (since the last warning)", batches, dropped, self.endpoint)

        def shutdown(self) -> None:
            with self._lock:
                if self._inner_shut:
                    return
                self._inner_shut = True
            _QUIET.local.heard = []
            try:
                self.inner.shutdown()
            except Exception as exc:  # noqa: BLE001
                _log.warning("tracing: the span exporter did not shut down cleanly: %r", exc)
            finally:
                _QUIET.local.heard = None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(self.inner.force_flush(timeout_millis))

    return GuardedExporter


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def parse_traceparent(value: Any) -> tuple[int, int, int] | None:
    """A W3C ``traceparent`` header as (trace id, parent span id, flags), or None when it is absent or
    invalid (then the call starts a trace of its own, as the spec says a receiver should)."""
    if not isinstance(value, str):
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(m.group(4), 16)


def current_parent() -> tuple[int, int, int] | None:
    """The caller's active OpenTelemetry span, for the Python API: a call made inside it joins its trace."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return context.trace_id, context.span_id, int(context.trace_flags)


def _call_ids() -> Any:
    """An IdGenerator whose trace ids come from the call being turned into spans (``use(id)`` just before
    its root span starts, on the same thread), and whose span ids come from an attempt that sent one to
    its provider (``use_span(id)``); random ones otherwise."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class CallIds(IdGenerator):
        def __init__(self) -> None:
            self._random = RandomIdGenerator()
            self._local = threading.local()

        def use(self, trace_id: int) -> None:
            self._local.trace_id = trace_id

        def use_span(self, span_id: int) -> None:
            self._local.span_id = span_id

        def generate_span_id(self) -> int:
            span_id = getattr(self._local, "span_id", 0)
            if span_id:
                self._local.span_id = 0
                return int(span_id)
            return self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            trace_id = getattr(self._local, "trace_id", 0)
            if trace_id:
                self._local.trace_id = 0
                return int(trace_id)
            return self._random.generate_trace_id()

    return CallIds()


class Tracing:
    """The spans of one gateway. ``record(call)`` is the per-call hook; ``aclose()`` flushes."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        service_name: str | None = None,
        sample: float = 1.0,
        providers: Mapping[str, ProviderInfo] | None = None,
        max_pending: int = MAX_PENDING,
        endpoint: str | None = None,
        close_s: float = CLOSE_S,
    ) -> None:
        """``endpoint``: where ``exporter`` sends spans, as warnings name it."""
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        self._otel = trace
        self._empty_context = Context
        self.providers = dict(providers or {})
        self.sample = sample
        self._bound = min(max(round(sample * 2**64), 0), 2**64)
        self._ids = _call_ids()
        attributes = {"service.name": service_name} if service_name else {}
        resource = Resource.create(attributes)
        if resource.attributes.get("service.name", "").startswith("unknown_service"):
            # neither the config nor OTEL_SERVICE_NAME named it
            resource = resource.merge(Resource({"service.name": "shipyard"}))
        # Sampling is decided in record() (before any work); OTEL_TRACES_SAMPLER must not sample again.
        self.provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, id_generator=self._ids,
                                       shutdown_on_exit=False)
        # Exports as soon as 512 spans wait, else every second; up to 8,192 queued while a collector is slow.
        self.exports = guarded_exporter(exporter, endpoint)
        self.close_s = close_s
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exports, max_queue_size=8192, schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("shipyard")
        self.max_pending = max_pending
        self.pending: deque[tuple[Call, float]] = deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._drain_lock = threading.Lock()
        self._failed: set[str] = set()
        self._closed = False

    @classmethod
    def from_config(cls, config: Any, exporter: SpanExporter | None = None) -> Tracing | None:
        """Tracing as ``telemetry:`` (or OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
        asks, through ``exporter`` if given (tests); None when no endpoint is configured, or when
        OTEL_SDK_DISABLED=true."""
        spec = config.model.telemetry
        named = None
        if exporter is None:
            if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
                return None
            endpoint = spec.otlp_endpoint
            if endpoint is None and not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                                         or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
                return None
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # endpoint None: the exporter reads the OTEL_EXPORTER_OTLP_* variables itself
            exporter = OTLPSpanExporter(endpoint=traces_endpoint(endpoint) if endpoint else None,
                                        headers=dict(spec.otlp_headers) or None,
                                        timeout=spec.export_timeout_s)
            named = traces_endpoint(endpoint) if endpoint else (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or traces_endpoint(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")))
        providers = {name: ProviderInfo.of(p.kind, p.settings.get("base_url"))
                     for name, p in config.providers.items()}
        return cls(exporter, service_name=spec.service_name, sample=spec.sample, providers=providers,
                   endpoint=named)

    # -- per call (the event loop) -----------------------------------------------------------------

    def sampled(self, trace_id: str) -> bool:
        """Whether a call's spans are kept: its trace id's low 64 bits under ``sample`` * 2^64."""
        try:
            return int(trace_id[16:32], 16) < self._bound
        except ValueError:
            return False

    def outbound(self, call: Call) -> tuple[bytes, bytes] | None:
        """(trace id, flags) as hex for the ``traceparent`` sent to the providers: the caller's trace, or
        the call's own; sampled as its spans will be. None when the call's id is not a trace id."""
        caller = call.metadata.get("traceparent")
        if caller:
            return b"%032x" % caller[0], b"%02x" % (caller[2] & 0xff)
        trace_id = call.trace_id
        if len(trace_id) != 32 or not all(c in "0123456789abcdef" for c in trace_id) or not int(trace_id, 16):
            return None
        return trace_id.encode(), b"01" if self.sampled(trace_id) else b"00"

    def record(self, call: Call) -> None:
        """Queue a finished call for the worker. Never raises; a full queue drops the call (counted).
        A call that came with a caller's ``traceparent`` follows the caller's sampling decision."""
        try:
            parent = call.metadata.get("traceparent")
            if not (parent[2] & 1 if parent else self.sampled(call.trace_id)):
                return
            if len(self.pending) >= self.max_pending:
                self.dropped += 1
                self._fail_once("queue", f"{self.max_pending} calls are waiting to become spans; dropping")
                return
            self.pending.append((call, call.elapsed_ms()))
            if self._thread is None:
                self._start()
        except Exception as exc:  # noqa: BLE001 - tracing must never break a call
            self._fail_once("record", exc)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shipyard-spans", daemon=True)
        self._thread.start()

    # -- the worker thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(DRAIN_S)
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        """Turn every queued call into spans (handed to the batch processor)."""
        with self._drain_lock:
            pending = self.pending
            while pending:
                call, elapsed_ms = pending.popleft()
                try:
                    self.spans(call, elapsed_ms)
                except Exception as exc:  # noqa: BLE001 - one odd call must not stop the others
                    self._fail_once("span", exc)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Build and export everything queued so far (blocking)."""
        self.drain()
        return self.provider.force_flush(int(timeout_s * 1000))

    async def aclose(self) -> None:
        """Export what is queued and stop (on Gateway.aclose). Safe to call twice."""
        self._stopping = True
        self._wake.set()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(self._close, thread)

    def _close(self, thread: threading.Thread | None) -> None:
        if thread is not None:
            thread.join()
        if self._closed:
            return
        self._closed = True
        # The SDK's flush tries every batch for up to export_timeout_s each, whatever it is told: it runs
        # on a thread of its own, given close_s; a first failure while stopping drops the rest at once.
        self.exports.closing()
        stop = threading.Thread(target=self._stop, name="shipyard-spans-stop", daemon=True)
        stop.start()
        stop.join(self.close_s)
        if stop.is_alive():
            self.exports.give_up()  # interrupts the exporter's retries; what is left is dropped (counted)
            stop.join(1.0)  # a request in flight to a silent collector may outlive it: the thread is a daemon
        self.exports.report()

    def _stop(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - a collector away at shutdown loses the last spans
            self._fail_once("flush", exc)
        self.provider.shutdown()

    def _fail_once(self, what: str, exc: object) -> None:
        if what not in self._failed:
            self._failed.add(what)
            _log.warning("tracing: %s failed (logged once; calls are not affected): %s", what, exc)

    # -- building spans ----------------------------------------------------------------------------

    def spans(self, call: Call, elapsed_ms: float) -> None:
        """The call's span and one child per attempt, with the times they really had."""
        otel = self._otel
        SpanKind, Status, StatusCode = otel.SpanKind, otel.Status, otel.StatusCode
        start_ns = int(call.started_at * 1e9)
        end_ns = start_ns + int(elapsed_ms * 1e6)
        operation = OPERATIONS.get(call.op, call.op)
        caller = call.metadata.get("traceparent")
        if caller:  # the caller's trace: our call is a child of its span
            context = otel.set_span_in_context(otel.NonRecordingSpan(otel.SpanContext(
                caller[0], caller[1], is_remote=True, trace_flags=otel.TraceFlags(caller[2]))))
        else:
            try:
                trace_id = int(call.trace_id, 16)
            except ValueError:
                trace_id = 0  # not 32 hex digits (a caller's own id): the span gets a random one
            self._ids.use(trace_id if 0 < trace_id < 2**128 else 0)
            context = self._empty_context()
        root = self.tracer.start_span(f"{operation} {call.feature.name}", context=context,
                                      kind=SpanKind.SERVER, attributes=self._call_attributes(call, operation),
                                      start_time=start_ns)
        for event in call.events:
            root.add_event(str(event.get("kind")), _event_attributes(event),
                           timestamp=start_ns + int(float(event.get("at_ms") or 0.0) * 1e6))
        parent = otel.set_span_in_context(root)
        serving = _serving(call)
        sole_ok = sum(1 for a in call.attempts if a.outcome == "ok") == 1
        for index, attempt in enumerate(call.attempts):
            a_start = start_ns + int(attempt.offset_ms * 1e6)
            a_end = a_start + int(attempt.latency_ms * 1e6)
            attributes = self._attempt_attributes(call, attempt, index, operation)
            if attempt is serving and call.stream:
                # A stream's attempt lasts until its last chunk; its latency is the time to the first one.
                attributes["shipyard.time_to_first_chunk_ms"] = round(attempt.latency_ms, 3)
                a_end = max(a_end, end_ns)
            if attempt is serving and sole_ok and call.usage:
                _usage(attributes, call.usage)
            info = self.providers.get(attempt.provider)
            kind = SpanKind.INTERNAL if info is not None and info.in_process else SpanKind.CLIENT
            if attempt.span_id:
                self._ids.use_span(attempt.span_id)  # the id the provider was sent in its traceparent
            span = self.tracer.start_span(f"{operation} {attempt.model}", context=parent, kind=kind,
                                          attributes=attributes, start_time=a_start)
            if attempt.outcome == "error":
                span.set_status(Status(StatusCode.ERROR, attempt.error_type or "error"))
            span.end(end_time=max(a_start, a_end))
        if call.status == "error":
            root.set_status(Status(StatusCode.ERROR, error_class_name(call.error) if call.error else "error"))
        root.end(end_time=end_ns)

    def _call_attributes(self, call: Call, operation: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": call.feature.name,
            "shipyard.trace_id": call.trace_id,
            "shipyard.feature": call.feature.name,
            "shipyard.op": call.op,
            "shipyard.status": call.status,
            "shipyard.stream": call.stream,
            "shipyard.attempts": len(call.attempts),
        }
        if call.route is not None:
            attributes["shipyard.route"] = call.route
            provider, slash, model = call.route.partition("/")
            if slash and model:
                attributes["gen_ai.response.model"] = model
                info = self.providers.get(provider)
                if info is not None:
                    attributes["gen_ai.provider.name"] = info.name
        if call.error is not None:
            attributes["error.type"] = error_class_name(call.error)
        if call.usage:
            _usage(attributes, call.usage)
        body = call.body if call.op != "embed" else {}
        for field in _MAX_TOKENS:
            if isinstance(body.get(field), int):
                attributes["gen_ai.request.max_tokens"] = body[field]
                break
        for field in ("temperature", "top_p"):
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{field}"] = float(value)
        if call.cache is not None:
            attributes["shipyard.cache"] = call.cache
        if call.cost_nano is not None:
            attributes["shipyard.cost_usd"] = call.cost_nano / 1e9
            attributes["shipyard.cost_estimated"] = call.cost_estimated
        if call.tenant is not None:
            attributes["shipyard.tenant"] = call.tenant
        severity = call.severity
        if severity is not None:
            attributes["shipyard.severity"] = severity
        segment = call.metadata.get("segment")
        data = call.input if isinstance(call.input, dict) else {}
        for key in call.feature.spec.segments:
            value = segment.get(key) if segment else None
            if value is None:
                value = data.get(key)
            if value is not None:
                attributes[f"shipyard.segment.{key}"] = str(value)[:64]
        return attributes

    def _attempt_attributes(self, call: Call, attempt: Attempt, index: int, operation: str) -> dict[str, Any]:
        info = self.providers.get(attempt.provider) or ProviderInfo(attempt.provider)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": info.name,
            "gen_ai.system": info.name,  # its name before semantic conventions 1.37 (older backends read it)
            "gen_ai.request.model": attempt.model,
            "shipyard.feature": call.feature.name,
            "shipyard.route": f"{attempt.provider}/{attempt.model}",
            "shipyard.attempt": index,
            "shipyard.outcome": attempt.outcome,
        }
        if attempt.outcome == "ok":
            attributes["gen_ai.response.model"] = attempt.model  # the route's (a dated name is not kept)
        elif attempt.outcome == "error":
            attributes["error.type"] = attempt.error_type or "error"
        elif attempt.error_type:
            # skipped (circuit_open, overloaded) or cancelled (a hedge lost, the client left)
            attributes["shipyard.skip_reason"] = attempt.error_type
        if attempt.status_code is not None:
            attributes["http.response.status_code"] = attempt.status_code
        if info.address:
            attributes["server.address"] = info.address
            if info.port:
                attributes["server.port"] = info.port
        return attributes


def _serving(call: Call) -> Attempt | None:
    """The attempt whose answer the call returned: the last successful one at the call's route."""
    for attempt in reversed(call.attempts):
        if attempt.outcome == "ok" and call.route == f"{attempt.provider}/{attempt.model}":
            return attempt
    return None


def _usage(attributes: dict[str, Any], usage: Mapping[str, Any]) -> None:
    for name, field in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
        if usage.get(field) is not None:
            attributes[f"gen_ai.usage.{name}"] = int(usage[field])


def _event_attributes(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's fields as span event attributes: plain values as they are, others as JSON. Free text
    (``message``) is left out: it may quote a request."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key in ("kind", "at_ms", "message") or value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
        else:
            out[key] = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return out
