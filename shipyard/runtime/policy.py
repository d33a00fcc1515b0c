"""The policy stage: a feature's risk boundaries (``guard.policy``) applied to its calls.

Two instances run in a feature's pipeline: one judges the input before limits and providers (a blocked
call costs nothing), one judges the answer inside the Fallback stage (so that ``action: fallback`` can
be answered with the feature's fallback_response). The rules themselves are ``shipyard.guard.policy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import PolicyRule
from ..errors import ConfigError, PolicyFallback, PolicyViolation
from ..guard.policy import CHECKS, Policy, PolicyStream, Violation, build_rule
from .call import Call, ChunkStream
from .guards import _texts
from .stages import Fallback, Next

_ORDER = {"critical": 0, "major": 1, "minor": 2}


def compile_policy(rules: Sequence[PolicyRule], feature: str) -> Policy:
    """The config's rules, compiled (the config has checked them; the language model loads here)."""
    try:
        return Policy(
            build_rule(r.name, r.where, severity=r.severity, action=r.action,
                       **{kind: getattr(r, kind) for kind in CHECKS})
            for r in rules
        )
    except ValueError as exc:
        raise ConfigError([("<config>", None, f"features.{feature}.guard.policy", str(exc))]) from None


def _input_text(call: Call) -> str:
    """What the caller wrote: the text of the user messages (the feature's own system prompt is not
    judged; a typed call's rendered user messages are)."""
    messages = call.body.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n\n".join(t for m in messages if isinstance(m, dict) and m.get("role") == "user" for t in _texts(m))


def _tool_names(message: dict[str, Any]) -> list[str]:
    """The functions a message (or a streamed delta: a name comes once, with a call's first piece) calls."""
    calls = [c.get("function") for c in message.get("tool_calls") or () if isinstance(c, dict)]
    calls.append(message.get("function_call"))  # the legacy single call
    return [f["name"] for f in calls if isinstance(f, dict) and isinstance(f.get("name"), str)]


def _answer(choice: Any) -> tuple[str, list[str]]:
    """A non-streamed choice's text and the names of the functions it calls."""
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return "", []
    return "\n".join(_texts(message)), _tool_names(message)


def _delta(choice: dict[str, Any]) -> tuple[str, list[str]]:
    """A streamed choice's new text and the functions whose calls it starts."""
    delta = choice.get("delta") or {}
    text = delta.get("content")
    return (text if isinstance(text, str) else ""), _tool_names(delta)


class PolicyGuard:
    """Judges the input (``where="input"``) or the answer (``"output"``, streamed or not) against the
    feature's rules. Every breach is a finding (rule, check, severity, action; never the text).
    The strictest breach decides: ``block`` raises PolicyViolation (400 ``policy_violation`` naming the
    rule), ``fallback`` raises PolicyFallback (the Fallback stage answers), ``flag`` serves."""

    def __init__(self, policy: Policy, where: str) -> None:
        self.policy = policy
        self.where = where

    async def handle(self, call: Call, next: Next) -> Any:
        if call.op == "embed":
            return await next(call)
        if self.where == "input":
            try:
                self._act(call, self.policy.evaluate(_input_text(call), "input"))
            except PolicyFallback as exc:
                # Input is judged outside the Fallback stage (before limits): the same stage answers here.
                return await Fallback().handle(call, _raising(exc))
            return await next(call)
        result = await next(call)
        if isinstance(result, ChunkStream):
            result.transform(self._stream_guard(call))
            return result
        if not isinstance(result, dict):
            return result
        found: dict[str, Violation] = {}
        for choice in result.get("choices") or ():
            text, tools = _answer(choice)
            for v in self.policy.evaluate(text, "output", tools):
                found.setdefault(v.rule, v)
        self._act(call, list(found.values()))
        return result

    def _act(self, call: Call, violations: list[Violation], *, streaming: bool = False) -> None:
        for v in violations:
            call.finding("policy", v.rule, severity=v.severity, action=v.action, where=v.where, check=v.check,
                         **v.detail)
        acting = [v for v in violations if v.action != "flag"]
        if not acting:
            return
        worst = min(acting, key=lambda v: (v.action != "block", _ORDER[v.severity]))
        message = f"blocked by policy rule {worst.rule!r} of {call.feature.name} ({worst.check} on {worst.where})"
        details = {"rule": worst.rule, "severity": worst.severity, "where": worst.where}
        if worst.action == "fallback" and not streaming:
            raise PolicyFallback(message, details=details)
        raise PolicyViolation(message, details=details)

    def _stream_guard(self, call: Call) -> Any:
        """A chunk transform: each choice's text and tool calls go through a PolicyStream before the chunk
        is passed on. A breach that acts ends the stream with an error event instead of the chunk that
        completed it (bytes already sent cannot be taken back, so ``fallback`` acts as ``block``); the
        whole answer is judged again with the chunk that carries its finish reason."""
        scans: dict[int, PolicyStream] = {}

        def guard(chunk: dict[str, Any]) -> dict[str, Any]:
            found: list[Violation] = []
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", 0)
                scan = scans.get(index)
                if scan is None:
                    scan = scans[index] = self.policy.stream()
                text, tools = _delta(choice)
                found += scan.feed(text, tools)
                if choice.get("finish_reason"):
                    found += scan.finish()
            if found:
                self._act(call, found, streaming=True)
            return chunk

        return guard


def _raising(exc: Exception) -> Next:
    async def inner(call: Call) -> Any:
        raise exc

    return inner
