"""Model providers: one protocol, many adapters, reached only through the registry.

A provider adapter is a class with:

- ``Settings``: a pydantic model of the keys it takes under ``providers.<name>`` (besides ``kind``);
- ``__init__(self, name: str, settings: Settings)``: cheap, no I/O;
- ``async start()`` / ``async aclose()``: open and close connections (called once each);
- ``async complete(model, body) -> dict``: an OpenAI ``chat.completion`` for an OpenAI-style body;
- ``stream(model, body) -> AsyncIterator[dict]``: OpenAI ``chat.completion.chunk`` dicts;
- ``async embed(model, body) -> dict``: an OpenAI embeddings response.

Every failure is raised as one of the ``ProviderError`` subclasses of ``shipyard.errors``: that is how the
router knows what to retry, what to fail over and what to hand back to the caller.

Built-in adapters register through the ``shipyard.providers`` entry-point group, the same door a third
party's package uses; tests and in-process code may also call :func:`register`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

__all__ = ["Provider", "ProviderSettings", "available_kinds", "get_provider_class", "register"]


class ProviderSettings(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


@runtime_checkable
class Provider(Protocol):
    Settings: ClassVar[type[BaseModel]]
    name: str

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, model: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def embed(self, model: str, body: dict[str, Any]) -> dict[str, Any]: ...


_registry: dict[str, type[Any]] = {}


def register(kind: str, cls: type[Any]) -> None:
    """Make ``kind:`` in a config name ``cls``. Later registrations replace earlier ones."""
    _registry[kind] = cls


def _load_entry_points() -> None:
    for ep in entry_points(group="shipyard.providers"):
        if ep.name not in _registry:
            _registry[ep.name] = ep  # loaded on first use: an adapter's imports cost nothing until used


def get_provider_class(kind: str) -> type[Any]:
    """The adapter class for ``kind``; KeyError if none is registered."""
    if kind not in _registry:
        _load_entry_points()
    found = _registry[kind]
    if not isinstance(found, type):
        found = found.load()
        _registry[kind] = found
    return found


def available_kinds() -> list[str]:
    _load_entry_points()
    return sorted(_registry)
