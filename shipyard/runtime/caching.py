"""The cache stage: exact (the normalized request) and semantic (a question close enough to one answered).

Entries are keyed by tenant, so one tenant never sees another's answer. Only clean answers are stored:
a finished completion (finish_reason stop or tool_calls) from a provider route. Errors, fallbacks,
broken or abandoned streams and refusals never are (a content_filter finish is a refusal). The client's
``Cache-Control: no-cache`` skips the lookup (the fresh answer is still stored); ``no-store`` skips both.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson

from ..config import CacheSpec
from ..economics.semantic import DEFAULT_THRESHOLD, is_hit, query_text
from ..providers._format import chat_completion
from ..state import State
from .call import Background, Call, ChunkStream
from .stages import Next, stream_of

log = logging.getLogger("shipyard.cache")

# Request fields that do not change the answer: left out of the key.
_NEUTRAL = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier", "model"})
_ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _normal(value: Any) -> Any:
    """Whitespace at the ends of text does not change a question."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _digest(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:40]


def request_key(call: Call) -> str:
    """The exact-cache key: tenant, feature, operation, and every field that can change the answer."""
    body = {k: v for k, v in call.body.items() if k not in _NEUTRAL}
    return _digest(call.tenant, call.feature.name, call.op, _normal(body), call.input if call.op == "invoke" else None)


def _cacheable(completion: Any) -> bool:
    if not isinstance(completion, dict):
        return False
    choices = completion.get("choices") or []
    return len(choices) == 1 and choices[0].get("finish_reason") in ("stop", "tool_calls")


def assemble(chunks: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The completion a text stream carried, or None when it is not a plain single-choice answer."""
    parts: list[str] = []
    finish = None
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                return None
            delta = choice.get("delta") or {}
            if delta.get("tool_calls"):
                return None
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            finish = choice.get("finish_reason") or finish
    return chat_completion("".join(parts), model=model, finish_reason=finish or "") if finish else None


class Cache:
    def __init__(self, state: State, spec: CacheSpec, background: Background, embedder: Any = None) -> None:
        self.state = state
        self.background = background
        self.exact_ttl = spec.exact.ttl_s if spec.exact else None
        self.semantic = spec.semantic
        self.embedder = embedder
        if self.semantic is not None:
            self.threshold = self.semantic.threshold or DEFAULT_THRESHOLD

    async def handle(self, call: Call, next: Next) -> Any:
        if call.op == "embed" or "no-store" in call.cache_control:
            return await next(call)
        lookup = "no-cache" not in call.cache_control
        key = request_key(call)
        question, namespace, vector = None, None, None
        if lookup and self.exact_ttl is not None:
            raw = await self.state.cache_get("exact:" + key)
            if raw is not None:
                return self._hit(call, raw, "exact")
        if self.semantic is not None and call.op == "chat":
            messages = call.body.get("messages") or []
            # Only a request that ends with the user's question: after a tool result or an assistant
            # prefill, the last message would change the answer without being compared.
            last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
            question = query_text(messages) if last.get("role") == "user" else ""
            if question:
                namespace = self._namespace(call, messages)
                vector = (await self.embedder.aencode([question]))[0]
                if lookup:
                    for entry, score in await self.state.vectors_search(namespace, vector, self.threshold):
                        raw = await self.state.cache_get("semantic:" + entry)
                        if raw is None:
                            continue
                        stored = orjson.loads(raw)
                        if is_hit(score, question, stored.get("q", ""), self.threshold):
                            call.event("cache_hit", cache="semantic", score=round(score, 4))
                            return self._hit(call, raw, "semantic")
        result = await next(call)
        if call.route_index is None or call.route == "fallback":
            return result  # nothing from a provider to keep

        async def store(completion: dict[str, Any]) -> None:
            value = {"completion": {**completion, "usage": _ZERO_USAGE}, "output": call.output}
            if self.exact_ttl is not None:
                await self.state.cache_set("exact:" + key, orjson.dumps(value), self.exact_ttl)
            if vector is not None and namespace is not None and self.semantic is not None:
                value["q"] = question
                await self.state.cache_set("semantic:" + key, orjson.dumps(value), self.semantic.ttl_s)
                await self.state.vectors_add(namespace, key, vector, self.semantic.ttl_s)

        if isinstance(result, ChunkStream):
            chunks = result.keep_chunks()

            def closed(done: Call) -> None:
                if done.status != "ok" or done.error is not None:
                    return
                completion = assemble(chunks, done.feature.name)
                if completion is not None and _cacheable(completion):
                    self.background.spawn(store(completion))

            result.on_close(closed)
        elif _cacheable(result):
            await store(result)
        return result

    @staticmethod
    def _namespace(call: Call, messages: list[Any]) -> str:
        """Everything but the last question must match exactly: tenant, parameters, earlier turns."""
        body = {k: v for k, v in call.body.items() if k not in _NEUTRAL and k != "messages"}
        return _digest(call.tenant, call.feature.name, _normal(body), _normal(messages[:-1]))

    @staticmethod
    def _hit(call: Call, raw: bytes, kind: str) -> Any:
        value = orjson.loads(raw)
        call.cache, call.route, call.status, call.cost_nano = kind, "cache", "ok", 0
        call.output = value.get("output")
        completion = value["completion"]
        return stream_of(call, completion) if call.stream else completion
