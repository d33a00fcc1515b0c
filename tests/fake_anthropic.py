"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 that a test programs on cue.

    claude = FakeAnthropic.start()
    claude.script(Message("hi"), Fail(529, "overloaded_error"), Message(tool_calls=[ToolUse("get_weather")]))

It is :class:`tests.fakes.FakeUpstream` (same thread, loop, script and ``requests`` record) answering in
Anthropic's shapes: a request with ``"stream": true`` gets the message as server-sent events
(``message_start``, ``content_block_*``, ``message_delta``, ``message_stop``), which a :class:`Message` can
break off, end early, or interrupt with an ``error`` event; :class:`Events` sends exactly the events given.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import FakeUpstream


@dataclass
class ToolUse:
    name: str = "get_weather"
    input: dict[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    id: str = "toolu_fake01"
    pieces: int = 3  # the input JSON is streamed in this many input_json_delta events


@dataclass
class Message:
    text: str | list[str] = "hello from claude"  # a list: the text deltas of a stream
    tool_calls: list[ToolUse] = field(default_factory=list)
    stop_reason: str | None = None  # default: tool_use if there are tool calls, else end_turn
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 11, "output_tokens": 7})
    id: str = "msg_fake01"
    model: str | None = None  # default: the model asked for
    delay_s: float = 0.0
    # Streaming only; "deltas" are content_block_delta events (text and tool input alike).
    error: str | None = None  # send an error event of this type after `error_after` deltas, and stop
    error_after: int = 0
    break_after: int | None = None  # drop the connection after this many deltas
    end_after: int | None = None  # end the body cleanly, without message_stop, after this many deltas


@dataclass
class Fail:
    status: int = 500
    type: str = "api_error"
    message: str = "upstream exploded"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Events:
    """A 200 event stream of exactly these (event, data) pairs."""

    events: list[tuple[str, dict[str, Any]]]


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def message_body(m: Message, model: str) -> dict[str, Any]:
    text = "".join(m.text) if isinstance(m.text, list) else m.text
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": t.id, "name": t.name, "input": t.input} for t in m.tool_calls]
    return {
        "id": m.id,
        "type": "message",
        "role": "assistant",
        "model": m.model or model,
        "content": content,
        "stop_reason": m.stop_reason or ("tool_use" if m.tool_calls else "end_turn"),
        "stop_sequence": None,
        "usage": m.usage,
    }


def message_events(m: Message, model: str) -> list[tuple[str, dict[str, Any]]]:
    """The events of a stream of ``m``, as Anthropic sends them."""
    body = message_body(m, model)
    start_usage = {k: v for k, v in m.usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    start = {**body, "content": [], "stop_reason": None, "usage": start_usage}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]

    def block(index: int, content_block: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": content_block}))
        for delta in deltas:
            events.append(("content_block_delta",
                           {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))

    pieces = m.text if isinstance(m.text, list) else ([m.text] if m.text else [])
    if pieces:
        block(0, {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces])
    for index, t in enumerate(m.tool_calls, start=1 if pieces else 0):
        raw = json.dumps(t.input)
        size = -(-len(raw) // max(1, t.pieces))
        parts = [""] + [raw[i:i + size] for i in range(0, len(raw), size)]
        block(index, {"type": "tool_use", "id": t.id, "name": t.name, "input": {}},
              [{"type": "input_json_delta", "partial_json": part} for part in parts])
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": m.usage.get("output_tokens", 0)}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class FakeAnthropic(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.default = Message()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body, b = await self._take(request)
        model = body.get("model", "claude-fake") if isinstance(body, dict) else "claude-fake"
        if request.path != "/v1/messages" or request.method != "POST":
            error = {"type": "not_found_error", "message": f"no route for {request.method} {request.path}"}
            return web.json_response({"type": "error", "error": error}, status=404)
        if isinstance(b, Fail):
            return web.json_response({"type": "error", "error": {"type": b.type, "message": b.message}},
                                     status=b.status, headers=b.headers)
        if isinstance(b, Events):
            return await self._send(request, b.events)
        assert isinstance(b, Message), b
        await asyncio.sleep(b.delay_s)
        if isinstance(body, dict) and body.get("stream"):
            return await self._send(request, message_events(b, model), b)
        return web.json_response(message_body(b, model))

    async def _send(
        self, request: web.Request, events: list[tuple[str, dict[str, Any]]], m: Message | None = None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        deltas = 0
        for name, data in events:
            if m is not None and name not in ("message_start", "ping"):
                if m.error is not None and deltas == m.error_after:
                    error = {"type": m.error, "message": f"fake {m.error}"}
                    await resp.write(sse("error", {"type": "error", "error": error}))
                    break
                if m.break_after is not None and deltas == m.break_after:
                    assert request.transport is not None
                    request.transport.close()  # the connection drops mid-stream
                    return resp
                if m.end_after is not None and deltas == m.end_after:
                    break
            await resp.write(sse(name, data))
            if name == "content_block_delta":
                deltas += 1
        await resp.write_eof()
        return resp
