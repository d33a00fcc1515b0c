"""In-process models: ``target: package.module:function``, sync or async.

The function receives the OpenAI-style request (``{"model", "messages", ...params}``) and returns either a
string (the assistant's answer), a dict with ``content`` (and optionally ``tool_calls``/``usage``), or a
whole ``chat.completion`` dict. Sync functions run in a worker thread so they never block the event loop.
An optional ``embed_target`` does the same for embeddings: it gets the request and returns a list of vectors.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from ..errors import MalformedResponse, ProviderRouteError, UnsupportedOperation
from . import ProviderSettings
from ._format import chat_completion, chunks_from_completion

_TARGET = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class PythonSettings(ProviderSettings):
    target: str = Field(pattern=_TARGET)
    embed_target: str | None = Field(None, pattern=_TARGET)
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to the function on every call."""
    max_workers: int = Field(8, ge=1, le=256)
    """Threads for a sync function; a call that timed out keeps its thread until the function returns."""
    path: str | None = None
    """A folder to import the target from, relative to the config file (e.g. ``.`` for the file's own)."""

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        base = Path((info.context or {}).get("base_dir") or ".")
        folder = (base / value).resolve()
        if not folder.is_dir():
            raise ValueError(f"folder {str(folder)!r} does not exist")
        return str(folder)


def load_target(spec: str, path: str | None = None) -> Callable[..., Any]:
    if path and path not in sys.path:
        sys.path.insert(0, path)
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderRouteError(f"cannot import {module_name!r} for target {spec!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProviderRouteError(f"target {spec!r}: {module_name} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ProviderRouteError(f"target {spec!r} is not callable")
    return obj


class PythonProvider:
    Settings = PythonSettings

    def __init__(self, name: str, settings: PythonSettings) -> None:
        self.name = name
        self.settings = settings
        self._fn: Callable[..., Any] | None = None
        self._embed_fn: Callable[..., Any] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        # Importing may train or load a model: do it off the event loop, once, at start.
        # Its own threads: a slow model that outlives its timeout must not starve the process's
        # shared pool (trace reads, migrations, other providers).
        self._executor = ThreadPoolExecutor(self.settings.max_workers, thread_name_prefix=f"shipyard-{self.name}")
        self._fn = await asyncio.to_thread(load_target, self.settings.target, self.settings.path)
        if self.settings.embed_target:
            self._embed_fn = await asyncio.to_thread(load_target, self.settings.embed_target, self.settings.path)

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _run(self, fn: Callable[..., Any], request: dict[str, Any]) -> Any:
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(request, **self.settings.options)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, request, **self.settings.options))
        except (ProviderRouteError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the model's own failure: this route cannot serve
            raise ProviderRouteError(f"{self.name} raised {type(exc).__name__}: {exc}") from exc

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._fn is not None, "provider not started"
        result = await self._run(self._fn, {**body, "model": model})
        if isinstance(result, str):
            return chat_completion(result, model=model)
        if isinstance(result, dict) and "choices" in result:
            return result
        if isinstance(result, dict) and ("content" in result or "tool_calls" in result):
            return chat_completion(
                result.get("content"),
                model=model,
                tool_calls=result.get("tool_calls"),
                usage=result.get("usage"),
                finish_reason="tool_calls" if result.get("tool_calls") else "stop",
            )
        raise MalformedResponse(
            f"{self.name} returned {type(result).__name__}; return a str, a dict with 'content', "
            "or a chat.completion dict"
        )

    async def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for piece in chunks_from_completion(await self.complete(model, body)):
            yield piece

    async def embed(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._embed_fn is None:
            raise UnsupportedOperation(f"provider {self.name} has no embed_target; it cannot make embeddings")
        vectors = await self._run(self._embed_fn, {**body, "model": model})
        if not isinstance(vectors, list):
            raise MalformedResponse(f"{self.name} embed_target must return a list of vectors")
        return {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
