"""Building OpenAI-format responses: the lingua franca inside Shipyard."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + os.urandom(12).hex()


def chat_completion(
    content: str | None,
    *,
    model: str,
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": id or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chunk(
    completion_id: str,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def chunks_from_completion(completion: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A finished completion as the chunks a stream of it would have carried (for fallbacks, python models)."""
    cid = completion.get("id") or new_id()
    model = completion.get("model", "")
    created = completion.get("created") or int(time.time())
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    yield chunk(cid, model, {"role": "assistant", "content": ""}, created=created)
    if message.get("content"):
        yield chunk(cid, model, {"content": message["content"]}, created=created)
    for i, call in enumerate(message.get("tool_calls") or []):
        yield chunk(cid, model, {"tool_calls": [{"index": i, **call}]}, created=created)
    last = chunk(cid, model, {}, choice.get("finish_reason") or "stop", created=created)
    yield last
    if completion.get("usage"):
        yield {**chunk(cid, model, {}, created=created), "choices": [], "usage": completion["usage"]}


def message_text(completion: dict[str, Any]) -> str:
    """The assistant text of a chat completion ('' when there is none)."""
    try:
        return completion["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
