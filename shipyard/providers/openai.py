"""Any OpenAI-compatible HTTP API: OpenAI, Azure-style deployments, vLLM, Ollama, llama.cpp server, ..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from pydantic import Field

from ..errors import MalformedResponse, TransientProviderError
from . import ProviderSettings
from ._h1 import Pool
from ._http import (
    header_block,
    post_events,
    post_json,
    stream_chunk,
    stream_error,
)


class OpenAISettings(ProviderSettings):
    base_url: str = Field(pattern=r"^https?://")
    api_key: str | None = None
    auth_header: str = "Authorization"
    """``Authorization`` sends ``Bearer KEY``; any other name (Azure: ``api-key``) sends the bare key."""
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    """Added to every URL, e.g. ``{api-version: 2024-06-01}`` for Azure."""
    max_connections: int = Field(1000, ge=1)
    stream_usage: bool = True
    """Ask for token usage at the end of every stream (``stream_options.include_usage``), so that
    streamed calls are counted even when the client did not ask; the usage chunk reaches only clients
    that asked for it. Set false for a server that rejects ``stream_options``."""


class OpenAIProvider:
    Settings = OpenAISettings

    def __init__(self, name: str, settings: OpenAISettings) -> None:
        self.name = name
        self.settings = settings
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity", **settings.headers}
        if settings.api_key and settings.api_key.lower() != "none":
            value = f"Bearer {settings.api_key}" if settings.auth_header.lower() == "authorization" else settings.api_key
            headers[settings.auth_header] = value
        self._head = header_block(headers)
        self._pool = Pool(settings.base_url, max_idle=settings.max_connections)
        self._chat_target = self._pool.target("/chat/completions", settings.query)
        self._embed_target = self._pool.target("/embeddings", settings.query)

    async def start(self) -> None:
        return None  # connections open on first use and are kept alive

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _post(self, target: str, payload: dict[str, Any]) -> Any:
        return await post_json(self.name, self._pool, target, self._head, orjson.dumps(payload))

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        data = await self._post(self._chat_target, {**body, "model": model})
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise MalformedResponse(f"{self.name} sent a chat completion without choices")
        return data

    async def embed(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        data = await self._post(self._embed_target, {**body, "model": model})
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise MalformedResponse(f"{self.name} sent an embeddings response without data")
        return data

    async def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        payload = {**body, "model": model, "stream": True}
        if self.settings.stream_usage:
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        request = post_events(self.name, self._pool, self._chat_target, self._head, orjson.dumps(payload))
        async with aclosing(request) as events:  # closed at once, however the loop is left
            async for _event, data in events:
                if data == b"[DONE]":
                    return
                chunk = stream_chunk(self.name, data)
                if "error" in chunk and "choices" not in chunk:
                    raise stream_error(self.name, chunk)
                yield chunk
        raise TransientProviderError(f"{self.name} ended the stream without [DONE]")
