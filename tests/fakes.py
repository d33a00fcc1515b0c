"""Fake model providers: real HTTP servers on 127.0.0.1 that a test programs on cue.

    upstream = FakeUpstream.start()
    upstream.script(Reply("hi"), Fail(500), Hang(), Malformed(), Stream(["a", "b"], break_after=1))

Each request to any path takes the next scripted behaviour (the last one repeats when the script
runs out, or ``upstream.default``). Requests are kept in ``upstream.requests`` for assertions.
It runs in its own thread with its own event loop, so sync clients (the official SDKs) and async
code in the test can both talk to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    content: str = "hello from the fake"
    model: str = "fake-model"
    delay_s: float = 0.0
    usage: dict[str, int] | None = field(default_factory=lambda: {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    body: dict[str, Any] | None = None  # send exactly this JSON instead


@dataclass
class Fail:
    status: int = 500
    message: str = "upstream exploded"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Hang:
    seconds: float = 60.0


@dataclass
class Malformed:
    text: str = '{"choices": [oops'
    status: int = 200


@dataclass
class Stream:
    pieces: list[str | dict[str, Any]] = field(default_factory=lambda: ["Hel", "lo", "!"])  # a dict: a whole delta
    break_after: int | None = None  # close the connection after this many content chunks
    delay_s: float = 0.0  # between chunks
    first_delay_s: float = 0.0
    include_usage: bool = True
    stall_after: int | None = None  # stop sending (keep the connection open) after this many chunks


@dataclass
class Embed:
    dims: int = 4


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class FakeUpstream:
    def __init__(self) -> None:
        self._script: list[Any] = []
        self.default: Any = Reply()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fake-upstream")

    @classmethod
    def start(cls) -> FakeUpstream:
        self = cls()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: Any) -> FakeUpstream:
        with self._lock:
            self._script = list(behaviours)
            self.requests.clear()
        return self

    def _next(self) -> Any:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            return self.default

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # handlers still sleeping in a Hang or a stalled stream: end them so none is destroyed pending
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def _take(self, request: web.Request) -> tuple[Any, Any]:
        """Record the request; return its parsed body and the next scripted behaviour."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(Seen(request.path, dict(request.headers), body, time.monotonic()))
        return body, self._next()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body, b = await self._take(request)
        model = (body or {}).get("model", "fake-model") if isinstance(body, dict) else "fake-model"
        if isinstance(b, Hang):
            await asyncio.sleep(b.seconds)
            return web.json_response({"error": {"message": "hung"}}, status=504)
        if isinstance(b, Fail):
            await asyncio.sleep(b.delay_s)
            return web.json_response(
                {"error": {"message": b.message, "type": "fake_error", "code": None}}, status=b.status, headers=b.headers
            )
        if isinstance(b, Malformed):
            return web.Response(text=b.text, status=b.status, content_type="application/json")
        if isinstance(b, Embed):
            inputs = body.get("input") if isinstance(body, dict) else None
            items = inputs if isinstance(inputs, list) else [inputs]
            data = [{"object": "embedding", "index": i, "embedding": [0.1 * (i + 1)] * b.dims} for i in range(len(items))]
            return web.json_response({"object": "list", "model": model, "data": data, "usage": {"prompt_tokens": 2, "total_tokens": 2}})
        if isinstance(b, Stream) or (isinstance(body, dict) and body.get("stream") and isinstance(b, Reply)):
            if isinstance(b, Reply):
                b = Stream([b.content])
            return await self._stream(request, b, model)
        assert isinstance(b, Reply), b
        await asyncio.sleep(b.delay_s)
        if b.body is not None:
            return web.json_response(b.body)
        payload: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": b.content}, "logprobs": None, "finish_reason": "stop"}],
        }
        if b.usage is not None:
            payload["usage"] = b.usage
        return web.json_response(payload)

    async def _stream(self, request: web.Request, b: Stream, model: str) -> web.StreamResponse:
        await asyncio.sleep(b.first_delay_s)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        await resp.write(event({"role": "assistant", "content": ""}))
        for i, piece in enumerate(b.pieces):
            if b.break_after is not None and i >= b.break_after:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-stream
                return resp
            if b.stall_after is not None and i >= b.stall_after:
                await asyncio.sleep(3600)
            await asyncio.sleep(b.delay_s)
            await resp.write(event(piece if isinstance(piece, dict) else {"content": piece}))
        await resp.write(event({}, "stop"))
        if b.include_usage:
            usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                     "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(b.pieces), "total_tokens": 5 + len(b.pieces)}}
            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
