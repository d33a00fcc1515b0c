"""Guard stages: they adapt a Call to the detectors of ``shipyard.guard`` (plain text in, findings out)."""

from __future__ import annotations

from typing import Any

from ..config import InjectionSpec
from ..errors import PolicyViolation
from ..guard.injection import DEFAULT_THRESHOLD, screen
from .call import Call
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
                    call.event("injection", action=self.action, score=round(verdict.score, 3),
                               reasons=list(verdict.reasons), message=i, role=message.get("role"))
                    if self.action == "block":
                        raise PolicyViolation(
                            f"blocked by the prompt-injection screen of {call.feature.name}: "
                            f"{', '.join(verdict.reasons)} (score {verdict.score:.2f} >= {self.threshold:g}) "
                            f"in message {i} ({message.get('role')})",
                            details={"rule": "injection", "reasons": list(verdict.reasons), "message": i},
                        )
                    break
        return await next(call)
