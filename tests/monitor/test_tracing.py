"""OpenTelemetry spans of every call and attempt: names, kinds, GenAI attributes, times and the call's own
trace id; sampling; and export over OTLP/HTTP to a real receiver on 127.0.0.1 that decodes the protobuf."""

from __future__ import annotations

import gzip
import logging
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shipyard import Gateway, load_config
from shipyard.errors import AllRoutesFailed
from shipyard.monitor.tracing import Tracing, traces_endpoint
from tests.conftest import OWNERS, free_port, two_route_config
from tests.fakes import Embed, Fail, Reply, Stream

MSG = [{"role": "user", "content": "where is my parcel"}]


async def no_sleep(seconds: float) -> None:
    return None


class OtlpReceiver:
    """An OTLP/HTTP trace collector on 127.0.0.1: keeps every decoded span, with its resource's attributes
    and the headers of the request that brought it."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.took(self.path, dict(self.headers), request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="otlp-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def took(self, path: str, headers: dict[str, str], request: ExportTraceServiceRequest) -> None:
        with self.arrived:
            self.paths.append(path)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            for resource_spans in request.resource_spans:
                resource = {a.key: _any(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex() or None,
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "status": span.status.code,
                            "attributes": {a.key: _any(a.value) for a in span.attributes},
                            "events": [(e.name, {a.key: _any(a.value) for a in e.attributes}) for e in span.events],
                            "resource": resource,
                            "scope": scope_spans.scope.name,
                        })
            self.arrived.notify_all()

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def of(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["trace_id"] == trace_id]

    def wait_for(self, trace_id: str, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.of(trace_id)) >= count, timeout_s)
            return self.of(trace_id)


def _any(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver():
    with OtlpReceiver() as r:
        yield r


def spans_by_trace(exporter: InMemorySpanExporter, trace_id: str) -> tuple[Any, list[Any]]:
    """The call's span and its attempts' spans, in start order."""
    spans = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1, spans
    return roots[0], sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time)


@pytest.fixture
def gw_config(primary, backup, write_config):
    return write_config(two_route_config(primary, backup))


# -- spans, with an in-memory exporter ---------------------------------------------------------------


async def test_a_call_and_its_attempts_are_genai_spans_under_the_calls_trace_id(gw_config, primary, backup):
    primary.script(Fail(500), Fail(503), Fail(500))  # three tries (retries: 2), then the backup
    backup.script(Reply("from the backup"))
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(gw_config), sleep=no_sleep, span_exporter=exporter)
    try:
        reply = await gw.chat("triage", MSG, temperature=0.2, max_tokens=50)
    finally:
        await gw.aclose()  # flushes the spans
    root, attempts = spans_by_trace(exporter, reply.trace_id)
    assert root.name == "chat triage" and root.kind == SpanKind.SERVER
    assert root.status.status_code == StatusCode.UNSET
    assert root.resource.attributes["service.name"] == "shipyard"
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "triage"
    assert a["gen_ai.response.model"] == "small-model" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 5 and a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.2
    assert a["shipyard.route"] == "backup/small-model" and a["shipyard.status"] == "ok"
    assert a["shipyard.attempts"] == 4 and "error.type" not in a
    assert [s.name for s in attempts] == ["chat gpt-4o-mini"] * 3 + ["chat small-model"]
    for span in attempts:
        assert span.parent.span_id == root.context.span_id and span.kind == SpanKind.CLIENT
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time
        assert span.attributes["gen_ai.provider.name"] == span.attributes["gen_ai.system"] == "openai"
        assert span.attributes["server.address"] == "127.0.0.1"
    for span, status in zip(attempts[:3], (500, 503, 500), strict=True):
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == "provider_unavailable"
        assert span.attributes["http.response.status_code"] == status
        assert span.attributes["shipyard.outcome"] == "error" and "gen_ai.usage.input_tokens" not in span.attributes
    served = attempts[-1]
    assert served.status.status_code == StatusCode.UNSET
    assert served.attributes["gen_ai.request.model"] == served.attributes["gen_ai.response.model"] == "small-model"
    assert served.attributes["gen_ai.usage.input_tokens"] == 5 and served.attributes["shipyard.attempt"] == 3
    assert served.attributes["server.port"] == backup.port


async def test_a_failed_call_is_an_error_span_with_its_code(gw_config, primary, backup):
    primary.default = backup.default = Fail(500)
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(gw_config), sleep=no_sleep, span_exporter=exporter)
    try:
        call = gw.new_call("triage", "chat", {"messages": MSG})
        with pytest.raises(AllRoutesFailed):
            await gw.run(call)
    finally:
        await gw.aclose()
    root, attempts = spans_by_trace(exporter, call.trace_id)
    assert root.status.status_code == StatusCode.ERROR and root.status.description == "all_routes_failed"
    assert root.attributes["error.type"] == "all_routes_failed" and root.attributes["shipyard.status"] == "error"
    assert "gen_ai.response.model" not in root.attributes
    assert len(attempts) == 5 and all(s.status.status_code == StatusCode.ERROR for s in attempts)


async def test_a_streamed_answers_attempt_lasts_until_its_last_chunk(gw_config, primary):
    primary.script(Stream(["a", "b", "c"], delay_s=0.05))
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(gw_config), span_exporter=exporter)
    try:
        stream = gw.stream("triage", MSG)
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
        assert text == "abc"
    finally:
        await gw.aclose()
    root, (attempt,) = spans_by_trace(exporter, stream.trace_id)
    assert root.attributes["shipyard.stream"] is True
    assert attempt.end_time == root.end_time
    first_chunk_ms = attempt.attributes["shipyard.time_to_first_chunk_ms"]
    assert 0 < first_chunk_ms < (attempt.end_time - attempt.start_time) / 1e6
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 3


async def test_typed_and_embedding_calls_name_their_operation(primary, write_config):
    path = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      typed:
        owners: {OWNERS}
        segments: [lang]
        input_schema: {{type: object, required: [text]}}
        prompt: [{{role: user, content: "{{{{ text }}}}"}}]
        route: [{{provider: primary, model: m}}]
      vectors:
        owners: {OWNERS}
        route: [{{provider: primary, model: embedder}}]
    """)
    primary.script(Reply('{"ok": true}'), Embed())
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(path), span_exporter=exporter)
    try:
        result = await gw.invoke("typed", {"text": "hola", "lang": "es"})
        embedded = await gw.embed("vectors", ["a", "b"])
    finally:
        await gw.aclose()
    root, (attempt,) = spans_by_trace(exporter, result.trace_id)
    assert root.name == "chat typed" and attempt.name == "chat m"
    assert root.attributes["shipyard.op"] == "invoke" and root.attributes["shipyard.segment.lang"] == "es"
    root, (attempt,) = spans_by_trace(exporter, embedded.trace_id)
    assert root.name == "embeddings vectors" and attempt.name == "embeddings embedder"
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"


async def test_events_become_span_events_and_no_free_text_is_exported(primary, write_config):
    path = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      guarded:
        owners: {OWNERS}
        fallback_response: {{content: "a person will follow up"}}
        guard:
          pii: {{input: redact}}
        route: [{{provider: primary, model: m, retries: 0}}]
    """)
    primary.script(Fail(500, message="upstream quoted ana@example.com"))
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(path), span_exporter=exporter)
    try:
        reply = await gw.chat("guarded", [{"role": "user", "content": "I am ana@example.com"}])
    finally:
        await gw.aclose()
    root, (attempt,) = spans_by_trace(exporter, reply.trace_id)
    assert root.attributes["shipyard.status"] == "fallback" and root.attributes["shipyard.severity"] == "minor"
    events = {e.name: dict(e.attributes) for e in root.events}
    finding = events["finding"]
    assert finding["guard"] == "pii" and finding["action"] == "redact" and finding["where"] == "input"
    assert "email" in finding["entities"]  # a mapping of counts, as JSON
    assert events["fallback"]["reason"] == "all_routes_failed" and "message" not in events["fallback"]
    for event in root.events:
        assert root.start_time <= event.timestamp <= root.end_time
    exported = repr([(s.attributes, [e.attributes for e in s.events], s.status) for s in (root, attempt)])
    assert "ana@example.com" not in exported and "quoted" not in exported


# -- sampling and configuration ----------------------------------------------------------------------


def test_sampling_follows_the_trace_ids_low_64_bits_as_otel_does():
    half = Tracing(InMemorySpanExporter(), sample=0.5)
    assert half.sampled("f" * 16 + "7fffffffffffffff") and not half.sampled("0" * 16 + "8000000000000000")
    assert Tracing(InMemorySpanExporter(), sample=1.0).sampled("f" * 32)
    assert not Tracing(InMemorySpanExporter(), sample=0.0).sampled("0" * 32)
    assert not half.sampled("not hex at all")


async def test_only_sampled_calls_become_spans(gw_config, primary):
    text = gw_config.read_text() + "telemetry: {sample: 0.5}\n"
    gw_config.write_text(text)
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(gw_config), span_exporter=exporter)
    try:
        ids = [(await gw.chat("triage", MSG)).trace_id for _ in range(24)]
    finally:
        await gw.aclose()
    kept = {f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()}
    assert kept == {t for t in ids if int(t[16:], 16) < 2**63}
    assert 0 < len(kept) < 24  # 24 random ids: all or none in a half sample is a 1-in-8-million event


def test_without_an_endpoint_nothing_is_built(gw_config, monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    gw = Gateway(load_config(gw_config))
    assert gw.tracing is None and len(gw.services.recorders) == 1  # metrics only
    gw.store.close()
    gw_config.write_text(gw_config.read_text() + 'telemetry: {otlp_endpoint: "http://127.0.0.1:9"}\n')
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    gw = Gateway(load_config(gw_config))
    assert gw.tracing is None
    gw.store.close()


def test_the_traces_path_is_added_to_a_base_url():
    assert traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_endpoint("https://otel.example/v1/traces") == "https://otel.example/v1/traces"


def test_a_call_tracing_cannot_read_is_logged_once_and_never_raises(caplog):
    tracing = Tracing(InMemorySpanExporter())
    with caplog.at_level(logging.WARNING, logger="shipyard.monitor"):
        tracing.record(object())  # type: ignore[arg-type]
        tracing.record(object())  # type: ignore[arg-type]
    assert caplog.text.count("tracing: record failed") == 1


# -- OTLP over HTTP ----------------------------------------------------------------------------------


async def test_spans_reach_an_otlp_collector_over_http(gw_config, primary, receiver, monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    gw_config.write_text(gw_config.read_text() + f"""telemetry:
      otlp_endpoint: "{receiver.url}"
      service_name: support-gateway
      otlp_headers: {{x-collector-token: t0ken}}
    """)
    gw = Gateway(load_config(gw_config))
    try:
        reply = await gw.chat("triage", MSG)
    finally:
        await gw.aclose()  # flushes: the spans are at the receiver when it returns
    spans = receiver.of(reply.trace_id)
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert receiver.headers[0]["x-collector-token"] == "t0ken"
    assert receiver.headers[0]["content-type"] == "application/x-protobuf"
    assert sorted(s["name"] for s in spans) == ["chat gpt-4o-mini", "chat triage"]
    root = next(s for s in spans if s["parent"] is None)
    attempt = next(s for s in spans if s["parent"] is not None)
    assert root["resource"]["service.name"] == "support-gateway" and root["scope"] == "shipyard"
    assert root["kind"] == 2 and attempt["kind"] == 3  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
    assert attempt["parent"] == root["span_id"] and attempt["trace_id"] == reply.trace_id
    assert attempt["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert attempt["attributes"]["gen_ai.usage.input_tokens"] == 5
    assert attempt["attributes"]["gen_ai.usage.output_tokens"] == 3
    assert root["attributes"]["gen_ai.request.model"] == "triage"
    assert root["start"] <= attempt["start"] < attempt["end"] <= root["end"]


async def test_the_collector_can_be_named_by_the_standard_environment_variable(gw_config, primary, receiver,
                                                                                monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    gw = Gateway(load_config(gw_config))
    assert gw.tracing is not None
    try:
        reply = await gw.chat("triage", MSG)
    finally:
        await gw.aclose()
    spans = receiver.of(reply.trace_id)
    assert len(spans) == 2 and spans[0]["resource"]["service.name"] == "shipyard"


async def test_a_collector_that_is_away_costs_the_calls_nothing(gw_config, primary):
    gw_config.write_text(gw_config.read_text() + f"""telemetry:
      otlp_endpoint: "http://127.0.0.1:{free_port()}"
      export_timeout_s: 0.5
    """)
    gw = Gateway(load_config(gw_config))
    try:
        replies = [await gw.chat("triage", MSG) for _ in range(3)]
    finally:
        await gw.aclose()  # gives up on the export after its timeout; does not hang
    assert [r.content for r in replies] == ["hello from the fake"] * 3


# -- W3C trace context -------------------------------------------------------------------------------

CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_parse_traceparent_follows_the_w3c_rules():
    from shipyard.monitor.tracing import parse_traceparent

    assert parse_traceparent(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01") == (int(CALLER_TRACE, 16), int(CALLER_SPAN, 16), 1)
    assert parse_traceparent(f"01-{CALLER_TRACE}-{CALLER_SPAN}-00-future") == (
        int(CALLER_TRACE, 16), int(CALLER_SPAN, 16), 0)  # a later version may add fields
    for bad in (None, "", "garbage", f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01", f"00-{'0' * 32}-{CALLER_SPAN}-01",
                f"00-{CALLER_TRACE}-{'0' * 16}-01", f"00-{CALLER_TRACE.upper()}-{CALLER_SPAN}-01",
                f"00-{CALLER_TRACE}-{CALLER_SPAN}-01-extra"):
        assert parse_traceparent(bad) is None, bad


def test_a_callers_traceparent_makes_the_call_a_child_of_its_span(gw_config, primary, serve):
    """Through the real server with the openai SDK: a sampled traceparent puts the call's spans in the
    caller's trace (the span says which Shipyard trace id it is); an unsampled one exports nothing; an
    invalid one is ignored (the call's own trace)."""
    exporter = InMemorySpanExporter()
    served = serve(gw_config, span_exporter=exporter)
    client = served.client()
    ids = {}
    for name, flags in (("sampled", "01"), ("unsampled", "00"), ("invalid", "zz")):
        raw = client.chat.completions.with_raw_response.create(
            model="triage", messages=MSG, extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"})
        ids[name] = raw.headers["x-shipyard-trace-id"]
    assert served.gateway.tracing.flush()
    spans = exporter.get_finished_spans()
    joined = [s for s in spans if f"{s.context.trace_id:032x}" == CALLER_TRACE]
    [root] = [s for s in joined if s.name == "chat triage"]
    assert root.parent is not None and f"{root.parent.span_id:016x}" == CALLER_SPAN and root.parent.is_remote
    assert root.attributes["shipyard.trace_id"] == ids["sampled"]
    [attempt] = [s for s in joined if s.name == "chat gpt-4o-mini"]
    assert attempt.parent.span_id == root.context.span_id
    sent = [r.headers["traceparent"] for r in primary.requests]  # passed on to the provider
    assert sent[0] == f"00-{CALLER_TRACE}-{attempt.context.span_id:016x}-01"
    assert sent[1].startswith(f"00-{CALLER_TRACE}-") and sent[1].endswith("-00")  # not sampled: said so
    assert sent[2].startswith(f"00-{ids['invalid']}-")
    assert {s.attributes["shipyard.trace_id"] for s in spans if s.name == "chat triage"} == {
        ids["sampled"], ids["invalid"]}
    own, _attempts = spans_by_trace(exporter, ids["invalid"])
    assert own.attributes["shipyard.trace_id"] == ids["invalid"]


async def test_a_library_call_inside_the_callers_span_joins_its_trace(gw_config, primary):
    from opentelemetry.sdk.trace import TracerProvider

    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(gw_config), span_exporter=exporter)
    caller = TracerProvider().get_tracer("the-poc")
    try:
        with caller.start_as_current_span("handle ticket") as outer:
            reply = await gw.chat("triage", MSG)
        alone = await gw.chat("triage", MSG)
    finally:
        await gw.aclose()
    inside = [s for s in exporter.get_finished_spans() if s.attributes.get("shipyard.trace_id") == reply.trace_id]
    [root] = [s for s in inside if s.name == "chat triage"]
    assert root.context.trace_id == outer.get_span_context().trace_id
    assert root.parent.span_id == outer.get_span_context().span_id
    own, _attempts = spans_by_trace(exporter, alone.trace_id)  # outside any span: the call's own trace id
    assert own.parent is None


async def test_each_attempt_sends_the_provider_a_traceparent_naming_its_own_span(gw_config, primary, backup):
    """Outbound W3C trace context: every attempt's request carries the call's trace id and the span id its
    attempt span gets, so a provider that traces (vLLM, another gateway) hangs its spans under it."""
    primary.script(Fail(500), Reply("from the primary"))
    exporter = InMemorySpanExporter()
    gw = Gateway(load_config(gw_config), sleep=no_sleep, span_exporter=exporter)
    try:
        reply = await gw.chat("triage", MSG)
    finally:
        await gw.aclose()
    sent = [r.headers["traceparent"] for r in primary.requests]
    assert len(sent) == 2 and len(set(sent)) == 2  # a retry is a new span
    _root, attempts = spans_by_trace(exporter, reply.trace_id)
    assert sent == [f"00-{reply.trace_id}-{s.context.span_id:016x}-01" for s in attempts]


async def test_without_tracing_no_traceparent_is_sent(primary, backup, write_config):
    gw = Gateway(load_config(write_config(two_route_config(primary, backup))))
    try:
        await gw.chat("triage", MSG)
    finally:
        await gw.aclose()
    assert "traceparent" not in {k.lower() for k in primary.requests[-1].headers}


def test_an_embeddings_request_joins_the_callers_trace_too(gw_config, primary, serve):
    exporter = InMemorySpanExporter()
    served = serve(gw_config, span_exporter=exporter)
    primary.script(Embed())
    served.client().embeddings.create(model="triage", input="hello",
                                      extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert served.gateway.tracing.flush()
    [root] = [s for s in exporter.get_finished_spans() if s.name == "embeddings triage"]
    assert f"{root.context.trace_id:032x}" == CALLER_TRACE and f"{root.parent.span_id:016x}" == CALLER_SPAN
