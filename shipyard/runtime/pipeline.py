"""Assembling a feature's pipeline: the list of stages, folded so each one wraps the next."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..config import FeatureSpec
from .call import Call
from .stages import Fallback, InputContract, Next, OutputContract, Record, Route, Stage


def fold(stages: Sequence[Stage], innermost: Next) -> Next:
    """``stages[0]`` outermost; each stage's ``next`` is the one after it, the last one's is ``innermost``."""
    handler = innermost
    for stage in reversed(stages):
        handler = _bind(stage, handler)
    return handler


def _bind(stage: Stage, inner: Next) -> Next:
    handle = stage.handle

    def run(call: Call) -> Any:
        return handle(call, inner)

    return run


def build_stages(spec: FeatureSpec, *, submit: Callable[[dict[str, Any]], None]) -> list[Stage]:
    """The stages a feature runs, outermost first, from its spec. This is the one place the order is decided:

        record -> inspect input -> fallback -> inspect output -> route -> provider

    Admission (keys), limits (budgets, rates), guards and caches slot in here as they are built.
    Fallback sits outside the output contract so that a contract no route can meet still gets the
    feature's fallback_response, and outside any future cache so that fallbacks are never cached.
    """
    return [Record(submit), InputContract(), Fallback(), OutputContract()]


def build_pipeline(stages: Sequence[Stage], route: Route) -> Next:
    return fold(stages, route.handle)
