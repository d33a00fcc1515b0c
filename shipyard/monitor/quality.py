"""Data quality of a feature's inputs as they arrive: what real traffic looks like against what the
feature was built for. Problems are counted, never refused (a refusal is the input contract's job):

    quality:
      fields:
        text: {required: true, min_length: 3, max_length: 4000, languages: [en, es]}
        amount: {type: number, min: 0, max: 10000}
        tier: {values: [free, pro, enterprise]}
      max_problem_rate: 0.05     # more calls than this with a problem, over `window`: an alert
      window: 15m

A typed call's input fields are checked by name; a chat call's last user message is the field
``prompt``. Each problem names the field and the kind: ``missing``, ``empty``, ``type``, ``too_short``,
``too_long``, ``below_min``, ``above_max``, ``unexpected_value``, ``language``, ``encoding`` (replacement
characters, control characters or mojibake such as ``Ã©``). The checks are cheap (language
identification, when asked for, is about a tenth of a millisecond).
"""

from __future__ import annotations

import re
from typing import Any

_MOJIBAKE = re.compile("[ÃÂ][\u0080-\u00bf]|â€[\u0080-\u00bf™œ]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def encoding_problem(text: str) -> bool:
    """Text that was decoded wrongly somewhere upstream."""
    return "\ufffd" in text or bool(_CONTROL.search(text)) or bool(_MOJIBAKE.search(text))


def fields_of(call: Any) -> dict[str, Any]:
    """The values quality is judged on: a typed call's input, or a chat call's last user message."""
    if isinstance(call.input, dict):
        return call.input
    for message in reversed(call.body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return {"prompt": content}
    return {}


class QualityChecker:
    """A feature's ``quality.fields``, compiled once (a language rule loads its model at start)."""

    def __init__(self, spec: Any) -> None:
        from ..guard.policy import Languages, _Text

        self.spec = spec
        self._text = _Text
        self.languages = {name: Languages(rule.languages) for name, rule in spec.fields.items() if rule.languages}

    def check(self, data: dict[str, Any]) -> list[dict[str, str]]:
        """Each problem of ``data`` against the fields' rules."""
        found: list[dict[str, str]] = []
        for name, rule in self.spec.fields.items():
            problem = self._field(name, rule, data.get(name))
            found.extend({"field": name, "problem": p} for p in problem)
        return found

    def _field(self, name: str, rule: Any, value: Any) -> list[str]:
        if value is None:
            return ["missing"] if rule.required else []
        if rule.type == "number" or rule.min is not None or rule.max is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return ["type"]
            out = []
            if rule.min is not None and value < rule.min:
                out.append("below_min")
            if rule.max is not None and value > rule.max:
                out.append("above_max")
            return out
        if rule.values is not None:
            return [] if str(value) in rule.values else ["unexpected_value"]
        if not isinstance(value, str):
            return ["type"] if rule.type == "string" else []
        text = value.strip()
        if not text:
            return ["empty"]
        out = []
        if rule.min_length is not None and len(text) < rule.min_length:
            out.append("too_short")
        if rule.max_length is not None and len(text) > rule.max_length:
            out.append("too_long")
        if encoding_problem(value):
            out.append("encoding")
        judge = self.languages.get(name)
        if judge is not None and judge(self._text(text), None) is not None:
            out.append("language")
        return out


class QualityStage:
    """The pipeline stage: the input's problems as a ``quality`` event of the trace (counted by the store,
    alerted on by the monitor); the call goes on whatever they are."""

    def __init__(self, spec: Any) -> None:
        self.checker = QualityChecker(spec)

    async def handle(self, call: Any, next: Any) -> Any:
        found = self.checker.check(fields_of(call))
        if found:
            call.event("quality", problems=found)
        return await next(call)
