"""The ASGI app: the OpenAI-compatible API, the typed feature API, health and traces.

Thin by design: it parses HTTP, builds a Call, runs it through the Gateway, and writes the answer.
Every error leaves as OpenAI-style JSON with the trace id; nothing else ever reaches a client.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..access import OPEN, Principal
from ..errors import InvalidJSON, NotFound, PayloadTooLarge, RequestError, ShipyardError, TooManyRequests
from ..runtime import Call, ChunkStream, Gateway
from ..runtime.call import new_trace_id

log = logging.getLogger("shipyard.server")

JSON = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def call_headers(call: Call) -> dict[str, str]:
    headers = {
        "x-shipyard-trace-id": call.trace_id,
        "x-shipyard-route": call.route or "none",
        "x-shipyard-attempts": str(len(call.attempts)),
    }
    if call.cost_nano is not None and not call.stream:
        headers["x-shipyard-cost-usd"] = f"{call.cost_nano / 1e9:.9f}".rstrip("0").rstrip(".") or "0"
    if call.cache is not None:
        headers["x-shipyard-cache"] = call.cache
    elif call.feature.spec.cache is not None:
        headers["x-shipyard-cache"] = "bypass" if "no-cache" in call.cache_control else "miss"
    return headers


def error_response(exc: ShipyardError, trace_id: str, call: Call | None = None) -> Response:
    headers = call_headers(call) if call is not None else {"x-shipyard-trace-id": trace_id}
    if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return json_response(exc.to_dict(trace_id), exc.status, headers)


def _metadata(request: Request) -> dict[str, Any]:
    """Segment values a client sends as ``X-Shipyard-Segment-<name>: <value>`` (bounded: 10, 64 chars),
    and its W3C ``traceparent``."""
    segment = {k[len("x-shipyard-segment-"):]: v[:64] for k, v in request.headers.items()
               if k.startswith("x-shipyard-segment-") and k != "x-shipyard-segment-"}
    metadata: dict[str, Any] = {"segment": dict(list(segment.items())[:10])} if segment else {}
    traceparent = request.headers.get("traceparent")
    if traceparent:  # W3C trace context: the call's spans join the caller's trace (when tracing is on)
        metadata["traceparent"] = traceparent[:128]
    return metadata


def _subject(request: Request) -> str | None:
    """Who a call is about, from ``X-Shipyard-Subject`` (erasable later with ``shipyard forget``)."""
    return request.headers.get("x-shipyard-subject", "").strip() or None


def bearer(request: Request) -> str:
    """The API key of a request ('' when it sent none): ``Authorization: Bearer KEY`` (or ``x-api-key``)."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body is {int(declared)} bytes; the limit is {max_bytes} (server.max_body_mb)")
    pieces: list[bytes] = []
    size = 0
    stream = request.stream()
    while True:
        try:
            piece = await anext(stream)
        except StopAsyncIteration:
            break
        except ClientDisconnect:
            raise RequestError("the client disconnected while sending its request") from None
        size += len(piece)
        if size > max_bytes:
            raise PayloadTooLarge(f"the request body is over the limit of {max_bytes} bytes (server.max_body_mb)")
        pieces.append(piece)
    raw = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("the request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise InvalidJSON(f"the request body is nested deeper than {MAX_DEPTH} levels; flatten it")
    return body


MAX_DEPTH = 128
"""Deeper request bodies are refused: nothing real nests this far, and the provider's encoder stops at 255."""


def _depth(value: Any) -> int:
    """How deeply ``value`` nests, without recursion (only walked when the body has enough brackets)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _require_feature(body: dict[str, Any]) -> str:
    model = body.pop("model", None)
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required: name the Shipyard feature to call", param="model")
    return model


class Api:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.max_body = int(gateway.config.model.server.max_body_mb * 1024 * 1024)

    async def run(self, call: Call) -> tuple[Any, Response | None]:
        try:
            return await self.gateway.run(call), None
        except ShipyardError as exc:
            return None, error_response(exc, call.trace_id, call)

    async def chat_completions(self, request: Request) -> Response:
        trace_id = new_trace_id()
        try:
            body = await read_json(request, self.max_body)
            feature = _require_feature(body)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise RequestError("'messages' must be a non-empty list of message objects", param="messages")
            if "stream_options" in body and not isinstance(body["stream_options"], dict | None):
                raise RequestError("'stream_options' must be an object, e.g. {\"include_usage\": true}",
                                   param="stream_options")
            stream = bool(body.pop("stream", False))
            call = self.gateway.new_call(
                feature, "chat", body, stream=stream, trace_id=trace_id, api_key=bearer(request),
                cache_control=request.headers.get("cache-control", ""), subject=_subject(request),
                metadata=_metadata(request),
            )
        except ShipyardError as exc:
            return error_response(exc, trace_id)
        result, failed = await self.run(call)
        if failed is not None:
            return failed
        if isinstance(result, ChunkStream):
            return StreamingResponse(
                self._sse(result),
                media_type="text/event-stream",
                headers={**call_headers(call), "cache-control": "no-cache"},
            )
        return json_response(result, headers=call_headers(call))

    @staticmethod
    async def _sse(stream: ChunkStream) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except ShipyardError as exc:
            # Bytes already reached the client: no failover is possible, so end with an error event.
            yield b"data: " + orjson.dumps(exc.to_dict(stream.call.trace_id)) + b"\n\n"
            return
        yield b"data: [DONE]\n\n"

    async def embeddings(self, request: Request) -> Response:
        trace_id = new_trace_id()
        try:
            body = await read_json(request, self.max_body)
            feature = _require_feature(body)
            if "input" not in body:
                raise RequestError("'input' is required: a string or a list of strings", param="input")
            call = self.gateway.new_call(feature, "embed", body, trace_id=trace_id, api_key=bearer(request),
                                         subject=_subject(request), metadata=_metadata(request))
        except ShipyardError as exc:
            return error_response(exc, trace_id)
        result, failed = await self.run(call)
        return failed or json_response(result, headers=call_headers(call))

    async def invoke(self, request: Request) -> Response:
        trace_id = new_trace_id()
        try:
            body = await read_json(request, self.max_body)
            if "input" not in body:
                raise RequestError('the body must be {"input": ...}', param="input")
            unknown = set(body) - {"input", "subject"}
            if unknown:
                raise RequestError(
                    f"unknown field(s) {sorted(unknown)}; the body is {{\"input\": ..., \"subject\": optional id}}"
                )
            subject = body.get("subject", _subject(request))
            if subject is not None and (not isinstance(subject, str) or not subject):
                raise RequestError("'subject' must be a non-empty string (who the call is about)", param="subject")
            call = self.gateway.new_call(
                request.path_params["name"], "invoke", {}, input=body["input"], trace_id=trace_id,
                api_key=bearer(request), cache_control=request.headers.get("cache-control", ""), subject=subject,
                metadata=_metadata(request),
            )
        except ShipyardError as exc:
            return error_response(exc, trace_id)
        _, failed = await self.run(call)
        if failed is not None:
            return failed
        return json_response(
            {"output": call.output, "trace_id": call.trace_id, "route": call.route}, headers=call_headers(call)
        )

    async def principal(self, request: Request) -> Principal:
        if self.gateway.config.model.auth == "none":
            return OPEN
        if not self.gateway.ready:
            await self.gateway.start()
        return await self.gateway.keys.verify(bearer(request))

    async def models(self, request: Request) -> Response:
        try:
            who = await self.principal(request)
        except ShipyardError as exc:
            return json_response(exc.to_dict(), exc.status)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "shipyard", "description": f.spec.description}
            for name, f in self.gateway.features.items()
            if who.may_use(name)
        ]
        return json_response({"object": "list", "data": data})

    async def trace(self, request: Request) -> Response:
        """A trace, for an admin, or for an owner key of the tenant the call was for."""
        trace_id = request.path_params["trace_id"]
        try:
            who = await self.principal(request)
            who.require("admin", "owner")
            record = await self.gateway.get_trace(trace_id)
            if record is None or (who.role != "admin" and record.get("tenant") != who.tenant):
                raise NotFound(f"no trace {trace_id!r}: it was never recorded, or its retention ended")
        except ShipyardError as exc:
            return json_response(exc.to_dict(), exc.status)
        return json_response(record)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics of this process (text format, or OpenMetrics if the scraper asks); with
        ``auth: keys``, for an admin key unless ``telemetry.metrics_public``."""
        if not self.gateway.config.model.telemetry.metrics_public:
            try:
                (await self.principal(request)).require("admin")
            except ShipyardError as exc:
                return json_response(exc.to_dict(), exc.status)
        body, content_type = await self.gateway.metrics.render(request.headers.get("accept", ""))
        return Response(body, media_type=None, headers={"content-type": content_type})

    async def readyz(self, request: Request) -> Response:
        if self.gateway.draining:
            return json_response({"status": "draining"}, 503)
        if not self.gateway.ready:
            return json_response({"status": "starting"}, 503)
        state = self.gateway.state
        return json_response({
            "status": "ready",
            "breakers": self.gateway.breaker_states(),
            "state": {
                "backend": self.gateway.config.model.state.url.split("://")[0],
                "degraded": state.degraded,
                "errors_total": getattr(state, "errors_total", 0),
                "on_failure": self.gateway.config.model.state.on_failure,
            },
        })


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err = NotFound if exc.status_code == 404 else RequestError
    body = err(f"{request.method} {request.url.path}: {exc.detail}").to_dict()
    return json_response(body, exc.status_code)


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(ShipyardError("internal error; the server log has the details").to_dict(), 500)


class _HotPaths:
    """The request path of every model call, served without Starlette's router and middleware
    layers (measured: they cost ~10% of the gateway's CPU per call); every other route, the error
    pages and the lifespan go through the Starlette app as usual."""

    def __init__(self, app: Starlette, endpoints: dict[tuple[str, str], Any]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            endpoint = self.endpoints.get((scope["method"], scope["path"]))
            if endpoint is not None:
                request = Request(scope, receive, send)
                try:
                    response = await endpoint(request)
                except Exception as exc:  # noqa: BLE001 - a bug of ours still answers in JSON
                    response = await _crash(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(gateway: Gateway, *, freeze_heap: bool = False) -> Any:
    """The ASGI app over ``gateway``. ``freeze_heap`` is for a process that serves only this app."""
    api = Api(gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.jobs = True  # the server purges expired traces and evaluates alerts on schedule
        await gateway.start()
        if freeze_heap:
            # Everything allocated so far (modules, config, schemas, pools) lives as long as the
            # process: move it out of the collector's sight. Full collections over that heap cost
            # ~65 ms each, several times a second under load; after a freeze they stay short
            # (bench/overhead.py: p99 at saturation 63-160 ms -> ~16 ms, CPU/request -20%).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            gateway.draining = True
            await gateway.aclose()

    from .admin import Admin  # imports this module: here, not at the top

    admin = Admin(gateway, api)
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/embeddings", api.embeddings, methods=["POST"]),
        Route("/v1/features/{name}/invoke", api.invoke, methods=["POST"]),
        Route("/v1/traces/{trace_id}", api.trace, methods=["GET"]),
        Route("/v1/admin/keys", admin.list_keys, methods=["GET"]),
        Route("/v1/admin/keys", admin.create_key, methods=["POST"]),
        Route("/v1/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/v1/admin/costs", admin.costs, methods=["GET"]),
        Route("/v1/admin/subjects/{subject}", admin.forget, methods=["DELETE"]),
        Route("/v1/admin/retention/run", admin.purge, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )
    hot = {("POST", "/v1/chat/completions"): api.chat_completions, ("POST", "/v1/embeddings"): api.embeddings}
    return _HotPaths(app, hot)
