"""Anthropic's Messages API (``POST /v1/messages``), spoken to in OpenAI's chat format both ways.

Requests arrive as OpenAI chat bodies and are translated by :func:`to_anthropic_request`; answers come back
through :func:`to_chat_completion` and, when streaming, :class:`StreamTranslator`, which turns Anthropic's
server-sent events into ``chat.completion.chunk`` dicts. All three are pure functions of their input, so they
are tested without a network. No SDK: the shared plumbing of ``_http`` (our HTTP/1.1 client) does the rest.

What does not translate:

- ``n`` above 1 is refused (:class:`ProviderRejected`): the Messages API returns one answer per request.
- ``temperature`` is clamped into Anthropic's range, [0, 1] (OpenAI's is [0, 2]), so that a request valid for
  an OpenAI route is not refused by an Anthropic route it fails over to.
- OpenAI-only fields (``stream_options``, ``response_format``, ``seed``, ``logprobs``, ``logit_bias``,
  ``presence_penalty``, ``frequency_penalty``, ``store``, ``metadata``, ...) are dropped: the payload is built
  only from the fields :func:`to_anthropic_request` knows. A stream always ends with a usage chunk.
- Extended-thinking blocks in answers are skipped: OpenAI's chat format has no place for them.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from pydantic import Field

from ..errors import MalformedResponse, ProviderRejected, TransientProviderError, UnsupportedOperation
from . import ProviderSettings
from ._format import chat_completion, chunk, new_id
from ._h1 import Pool
from ._http import (
    header_block,
    post_events,
    post_json,
    stream_chunk,
    stream_error,
)

__all__ = [
    "AnthropicProvider",
    "AnthropicSettings",
    "StreamTranslator",
    "finish_reason",
    "messages_url",
    "to_anthropic_request",
    "to_chat_completion",
    "usage_from",
]


class AnthropicSettings(ProviderSettings):
    base_url: str = Field("https://api.anthropic.com", pattern=r"^https?://")
    """The API root, with or without a trailing ``/v1``: requests go to ``{root}/v1/messages``."""
    api_key: str | None = None
    """Sent as ``x-api-key``; ``none`` (or nothing) sends no key, e.g. behind a proxy that adds it."""
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = Field(default_factory=dict)
    """Added to every request, e.g. ``{anthropic-beta: ...}``."""
    default_max_tokens: int = Field(1024, ge=1)
    """Anthropic requires ``max_tokens``; this is sent when the caller gives neither it nor
    ``max_completion_tokens``."""
    max_connections: int = Field(1000, ge=1)


def messages_url(base_url: str) -> str:
    """``{root}/v1/messages`` for a base URL given with or without ``/v1`` (and trailing slashes)."""
    root = base_url.rstrip("/")
    root = root.removesuffix("/v1")
    return root + "/v1/messages"


# --- request: OpenAI chat body -> Anthropic Messages body ---------------------------------------------------

_DATA_URL = re.compile(r"^data:([^;,]+)(?:;[^;,]*)*;base64,(.*)$", re.DOTALL)


def _rejected(message: str, param: str | None = None) -> ProviderRejected:
    return ProviderRejected(message, param=param)


def _data_url(url: str, where: str) -> tuple[str, str]:
    found = _DATA_URL.match(url)
    if not found:
        raise _rejected(f"{where}: only base64 data: URLs are supported here, not {url[:40]!r}...", where)
    return found.group(1), found.group(2)


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI message content (a string or a list of parts) as Anthropic content blocks.

    Empty text is left out: Anthropic refuses empty text blocks, and OpenAI clients send ``""`` freely."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _rejected(f"{where}.content must be a string or a list of content parts", where)
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _rejected(f"{at}.image_url.url must be a string", at)
            if url.startswith("data:"):
                media_type, data = _data_url(url, at)
                source = {"type": "base64", "media_type": media_type, "data": data}
                blocks.append({"type": "image", "source": source})
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            data_url = file.get("file_data")
            if not isinstance(data_url, str):
                raise _rejected(f"{at}: only files given inline, as a base64 data: URL in file_data", at)
            media_type, data = _data_url(data_url, at)
            if media_type != "application/pdf":
                raise _rejected(f"{at}: Anthropic takes PDF documents, not {media_type}", at)
            source = {"type": "base64", "media_type": media_type, "data": data}
            blocks.append({"type": "document", "source": source})
        else:
            raise _rejected(f"{at}: content parts of type {kind!r} cannot be sent to Anthropic", at)
    return blocks


def _system_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    blocks = _content_blocks(content, where)
    if any(b["type"] != "text" for b in blocks):
        raise _rejected(f"{where}: a system message may only hold text", where)
    return "\n".join(b["text"] for b in blocks)


def _tool_input(arguments: Any, where: str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise _rejected(f"{where}.function.arguments is not valid JSON", where) from None
    if not isinstance(value, dict):
        raise _rejected(f"{where}.function.arguments must be a JSON object", where)
    return value


def _tool_use_blocks(tool_calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list):
        raise _rejected(f"{where}.tool_calls must be a list", where)
    blocks = []
    for i, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(call.get("id"), str)):
            raise _rejected(f"{at} must have an id and a function with a name", at)
        tool_input = _tool_input(fn.get("arguments"), at)
        blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"], "input": tool_input})
    return blocks


def _tool_result_block(message: dict[str, Any], where: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise _rejected(f"{where}: a tool message needs the tool_call_id it answers", where)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        blocks = _content_blocks(content, where)
        if blocks:
            block["content"] = blocks
    return block


def _messages(messages: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages): system and developer messages lifted out, tool results turned into user turns,
    and consecutive turns of one role merged (so that every tool_result answering one assistant turn sits in
    the single user turn after it)."""
    if not isinstance(messages, list):
        raise _rejected("'messages' must be a list", "messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _rejected(f"{where} must be an object", where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _system_text(message.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), where)
            if message.get("tool_calls"):
                blocks += _tool_use_blocks(message["tool_calls"], where)
            if not blocks:
                continue  # an empty assistant turn says nothing, and Anthropic would refuse it
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message, where)]
        else:
            raise _rejected(f"{where}: role {role!r} cannot be sent to Anthropic", where)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _rejected("'tools' must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function":
            raise _rejected(f"{at}: only function tools can be sent to Anthropic", at)
        if not isinstance(fn.get("name"), str):
            raise _rejected(f"{at}.function.name is required", at)
        converted: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            converted["description"] = fn["description"]
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    named = choice.get("function") if isinstance(choice, dict) else None
    if choice is None or choice == "auto":
        converted: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        converted = {"type": "any"}
    elif isinstance(named, dict) and isinstance(named.get("name"), str):
        converted = {"type": "tool", "name": named["name"]}
    else:
        message = f"tool_choice {choice!r} is not one of auto, none, required, or a named function"
        raise _rejected(message, "tool_choice")
    if parallel is False:
        converted["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is auto already
    return converted


def to_anthropic_request(model: str, body: dict[str, Any], default_max_tokens: int = 1024) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat body. Raises ProviderRejected for what cannot be sent."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _rejected(f"n={n} cannot be served: Anthropic returns one choice per request; send n=1", "n")
    system, messages = _messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
    }
    if system:
        payload["system"] = system
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        payload["temperature"] = min(max(float(temperature), 0.0), 1.0)
    elif temperature is not None:
        payload["temperature"] = temperature  # not a number: Anthropic's refusal will say so
    if body.get("top_p") is not None:
        payload["top_p"] = body["top_p"]
    if body.get("top_k") is not None:  # not OpenAI's, but a route's params may set it
        payload["top_k"] = body["top_k"]
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        payload["stop_sequences"] = list(stop)
    if isinstance(body.get("user"), str) and body["user"]:
        payload["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        payload["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            payload["tool_choice"] = choice
    return payload


# --- response: Anthropic Message -> OpenAI chat.completion --------------------------------------------------

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from(usage: Any) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: prompt tokens count the cached ones (written and read) too."""
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    cache_read, cache_write = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    prompt = count("input_tokens") + cache_read + cache_write
    completion = count("output_tokens")
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read or cache_write:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def to_chat_completion(provider: str, model: str, data: Any) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` for an Anthropic Message; MalformedResponse if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise MalformedResponse(f"{provider} sent a message without a content list")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in data["content"]:
        if not isinstance(block, dict):
            raise MalformedResponse(f"{provider} sent a content block that is not an object")
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            function = {"name": block.get("name") or "", "arguments": _arguments(block.get("input"))}
            call_id = block.get("id") or new_id("call_")
            tool_calls.append({"id": call_id, "type": "function", "function": function})
    text = "".join(texts)
    return chat_completion(
        text if text or not tool_calls else None,
        model=data.get("model") or model,
        finish_reason=finish_reason(data.get("stop_reason")),
        usage=usage_from(data.get("usage")),
        tool_calls=tool_calls or None,
        id=data.get("id") or None,
    )


# --- streaming: Anthropic events -> OpenAI chunks -----------------------------------------------------------


_CONTENT_EVENTS = frozenset(
    {"content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
)


class StreamTranslator:
    """Feed it Anthropic stream events, in order; it returns the OpenAI chunks each one makes.

    The role chunk is held back until the first content (or the end): an ``error`` event that comes right
    after ``message_start`` then fails the attempt before anything reached the caller, so the router may
    still retry it or fail over. ``stopped`` turns True at ``message_stop``, after the usage chunk.
    """

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.id: str | None = None
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.stopped = False
        self._opened = False
        self._finished = False
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool_calls index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        assert self.id is not None
        return chunk(self.id, self.model, delta, finish, created=self.created)

    def _open(self) -> list[dict[str, Any]]:
        if self._opened:
            return []
        self._opened = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, event: str | None, payload: dict[str, Any]) -> list[dict[str, Any]]:
        kind = payload.get("type") or event
        if kind == "ping":
            return []
        if kind == "error":
            raise stream_error(self.provider, payload)
        if kind == "message_start":
            message = payload.get("message")
            if not isinstance(message, dict):
                raise MalformedResponse(f"{self.provider} sent message_start without a message")
            self.id = message.get("id") or new_id()
            self.model = message.get("model") or self.model
            if isinstance(message.get("usage"), dict):
                self.usage.update(message["usage"])
            return []
        if kind not in _CONTENT_EVENTS:
            return []  # Anthropic may add event types: they are to be ignored
        if self.id is None:
            raise MalformedResponse(f"{self.provider} sent {kind} before message_start")
        out = self._open()
        if kind == "content_block_start":
            out += self._block_start(payload)
        elif kind == "content_block_delta":
            out += self._block_delta(payload)
        elif kind == "message_delta":
            usage = payload.get("usage")
            if isinstance(usage, dict):  # cumulative counts: the latest wins
                self.usage.update({k: v for k, v in usage.items() if v is not None})
            delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
            if not self._finished:
                self._finished = True
                out.append(self._chunk({}, finish_reason(delta.get("stop_reason"))))
        elif kind == "message_stop":
            if not self._finished:
                self._finished = True
                out.append(self._chunk({}, "tool_calls" if self._tools else "stop"))
            out.append({**self._chunk({}), "choices": [], "usage": usage_from(self.usage)})
            self.stopped = True
        return out

    def _block_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            raise MalformedResponse(f"{self.provider} sent content_block_start without a content_block")
        if block.get("type") == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if block.get("type") != "tool_use":
            return []  # thinking and server-side tool blocks have no place in OpenAI's format
        index = len(self._tools)
        self._tools[payload.get("index", -1)] = index
        arguments = _arguments(block["input"]) if block.get("input") else ""
        call = {"index": index, "id": block.get("id") or new_id("call_"), "type": "function",
                "function": {"name": block.get("name") or "", "arguments": arguments}}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            raise MalformedResponse(f"{self.provider} sent content_block_delta without a delta")
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta["text"]})] if delta.get("text") else []
        if delta.get("type") == "input_json_delta":
            index = self._tools.get(payload.get("index", -1))
            if index is None:
                raise MalformedResponse(f"{self.provider} sent tool input for a block that is not a tool_use")
            part = delta.get("partial_json")
            if not part:
                return []
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})]
        return []  # thinking_delta, signature_delta, citations_delta


# --- the adapter --------------------------------------------------------------------------------------------


class AnthropicProvider:
    Settings = AnthropicSettings

    def __init__(self, name: str, settings: AnthropicSettings) -> None:
        self.name = name
        self.settings = settings
        self._url = messages_url(settings.base_url)
        self._headers = {
            "Content-Type": "application/json",
            "anthropic-version": settings.anthropic_version,
            **settings.headers,
        }
        if settings.api_key and settings.api_key.lower() != "none":
            self._headers["x-api-key"] = settings.api_key
        self._head = header_block(self._headers)
        self._pool = Pool(self._url, max_idle=settings.max_connections)
        self._target = self._pool.target("")

    async def start(self) -> None:
        return None  # connections open on first use and are kept alive

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _payload(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return to_anthropic_request(model, body, self.settings.default_max_tokens)

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        data = orjson.dumps(self._payload(model, body))
        answer = await post_json(self.name, self._pool, self._target, self._head, data)
        return to_chat_completion(self.name, model, answer)

    async def embed(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        raise UnsupportedOperation(
            f"provider {self.name!r} is Anthropic, which has no embeddings API: "
            "route embeddings to a provider that has one (e.g. kind: openai)"
        )

    async def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        data = orjson.dumps({**self._payload(model, body), "stream": True})
        translator = StreamTranslator(self.name, model)
        async with aclosing(post_events(self.name, self._pool, self._target, self._head, data)) as events:
            async for event, raw in events:
                for out in translator.feed(event, stream_chunk(self.name, raw)):
                    yield out
                if translator.stopped:
                    return
        raise TransientProviderError(f"{self.name} ended the stream without message_stop")
