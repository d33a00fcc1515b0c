"""Guard stages: they adapt a Call to the detectors of ``shipyard.guard`` (plain text in, findings out)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from ..config import InjectionSpec, PiiSpec
from ..errors import ConfigError, PIIBlocked, PolicyViolation
from ..guard.injection import DEFAULT_THRESHOLD, screen
from ..guard.pii import Redactor, StreamScanner, restore
from .call import Call, ChunkStream
from .stages import Next


def _texts(message: Any) -> list[str]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


class InjectionScreen:
    """Screens the untrusted messages of a call (the user's and tool results, by default) for prompt
    injection and jailbreaks before any provider sees them: ``flag`` records the verdict in the trace,
    ``block`` refuses with 400 ``policy_violation`` naming the rules that matched (never the text)."""

    def __init__(self, spec: InjectionSpec) -> None:
        self.action = spec.action
        self.threshold = spec.threshold if spec.threshold is not None else DEFAULT_THRESHOLD
        self.roles = frozenset(spec.roles)
        self.severity = spec.severity

    async def handle(self, call: Call, next: Next) -> Any:
        messages = call.body.get("messages")
        if isinstance(messages, list):
            for i, message in enumerate(messages):
                if not isinstance(message, dict) or message.get("role") not in self.roles:
                    continue
                for text in _texts(message):
                    verdict = screen(text)
                    if verdict.score < self.threshold:
                        continue
                    call.finding("injection", "injection", severity=self.severity, action=self.action,
                                 where="input", score=round(verdict.score, 3), reasons=list(verdict.reasons),
                                 message=i, role=message.get("role"))
                    if self.action == "block":
                        raise PolicyViolation(
                            f"blocked by the prompt-injection screen of {call.feature.name}: "
                            f"{', '.join(verdict.reasons)} (score {verdict.score:.2f} >= {self.threshold:g}) "
                            f"in message {i} ({message.get('role')})",
                            details={"rule": "injection", "reasons": list(verdict.reasons), "message": i},
                        )
                    break
        return await next(call)


def _restore_json(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        return restore(value, mapping)
    if isinstance(value, list):
        return [_restore_json(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _restore_json(v, mapping) for k, v in value.items()}
    return value


class PiiGuard:
    """PII on the way in and out. Input: every message's text is redacted (or masked, hashed,
    pseudonymized, or the call blocked with 400 ``pii_blocked``) before any provider or cache sees it.
    Output (streamed or not): placeholders of ``pseudonymize`` are restored, so the user sees their own
    data and the provider never did; the answer's own PII gets the ``output`` action. Traces get
    the counts per entity, never the values."""

    def __init__(self, spec: PiiSpec, feature: str) -> None:
        key = os.environ.get(spec.hash_key_env, "").encode()
        if "hash" in (spec.input, spec.output) and not key:
            raise ConfigError([("<config>", None, f"features.{feature}.guard.pii",
                                f"the hash action needs a key: set the environment variable {spec.hash_key_env}")])
        self.input = Redactor(dict.fromkeys(spec.entities, spec.input), hash_key=key) if spec.input else None
        self.output = Redactor(dict.fromkeys(spec.entities, spec.output), hash_key=key) if spec.output else None
        self.severity = spec.severity
        self.actions = {"input": spec.input, "output": spec.output}

    def _found(self, call: Call, where: str, entities: Counter[str]) -> None:
        call.finding("pii", "pii", severity=self.severity, action=self.actions[where] or "none", where=where,
                     entities=dict(entities))

    async def handle(self, call: Call, next: Next) -> Any:
        mapping: dict[str, str] = {}
        if self.input is not None:
            found: Counter[str] = Counter()
            try:
                for message in call.body.get("messages") or ():
                    if not isinstance(message, dict):
                        continue
                    content = message.get("content")
                    if isinstance(content, str):
                        message["content"], findings, _ = self.input.redact(content, mapping)
                        found.update(f.entity for f in findings)
                    elif isinstance(content, list):
                        for part in content:
                            if isinstance(part, dict) and isinstance(part.get("text"), str):
                                part["text"], findings, _ = self.input.redact(part["text"], mapping)
                                found.update(f.entity for f in findings)
            except PIIBlocked as exc:
                call.finding("pii", "pii", severity=self.severity, action="block", where="input",
                             entities={exc.entity: 1})
                raise
            if found:
                self._found(call, "input", found)
        result = await next(call)
        if not (mapping or self.output is not None):
            return result
        if isinstance(result, ChunkStream):
            result.transform(self._stream_guard(call, mapping))
            return result
        if not isinstance(result, dict):
            return result  # an embedding
        try:
            message = result["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            return result
        text = message.get("content")
        if isinstance(text, str):
            text = restore(text, mapping)
            if self.output is not None:
                text, findings, _ = self.output.redact(text)
                if findings:
                    self._found(call, "output", Counter(f.entity for f in findings))
            result = {**result, "choices": [{**result["choices"][0], "message": {**message, "content": text}},
                                            *result["choices"][1:]]}
        if mapping and call.output is not None:
            call.output = _restore_json(call.output, mapping)
        return result

    def _stream_guard(self, call: Call, mapping: dict[str, str]) -> Any:
        """A chunk transform: the answer's text goes through a StreamScanner (which holds back a bounded
        tail, so an entity or a placeholder split across chunks is seen whole), then pseudonyms are
        restored. The held-back text is released with the chunk that carries the finish reason; a stream
        that breaks before it releases nothing more (nothing unscanned leaks)."""
        scanner = StreamScanner(self.output or Redactor({}, hash_key=b""))
        found: Counter[str] = Counter()

        def guard(chunk: dict[str, Any]) -> dict[str, Any]:
            choices = chunk.get("choices")
            if not choices or not isinstance(choices[0], dict):
                return chunk  # a usage chunk
            choice = choices[0]
            delta = choice.get("delta") or {}
            text = delta.get("content")
            out = scanner.feed(text) if isinstance(text, str) else ""
            if choice.get("finish_reason"):
                out += scanner.flush()
                found.update(f.entity for f in scanner.findings)
                if found:
                    self._found(call, "output", found)
            if not isinstance(text, str) and not out:
                return chunk
            delta = {**delta, "content": restore(out, mapping)}
            return {**chunk, "choices": [{**choice, "delta": delta}, *choices[1:]]}

        return guard
