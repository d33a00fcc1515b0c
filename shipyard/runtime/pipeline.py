"""Assembling a feature's pipeline: the list of stages, folded so each one wraps the next."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..access import KeyRing
from ..economics.quotas import BudgetRule, RateRule
from ..monitor.quality import QualityStage
from ..state import State
from .caching import Cache
from .call import Background, Call
from .feature import Feature
from .guards import InjectionScreen, PiiGuard
from .limits import Admit, Limit
from .policy import PolicyGuard, compile_policy
from .route import Route
from .stages import Fallback, InputContract, Next, OutputContract, Record, Stage


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


@dataclass
class Services:
    """What the stages share across features: the trace writer, keys, the shared state."""

    submit: Callable[[dict[str, Any]], None]
    keys: KeyRing
    state: State
    auth: str = "none"
    tenants: dict[str, tuple[list[RateRule], list[BudgetRule]]] = field(default_factory=dict)
    background: Background = field(default_factory=Background)
    embedder: Any = None
    observers: dict[str, Callable[[Call, str | None], None]] = field(default_factory=dict)
    """Per feature: told of each finished call as its trace is recorded (online evaluation)."""
    recorders: list[Callable[[Call], None]] = field(default_factory=list)
    """Every feature: told of each finished call once, after its trace is submitted (metrics, tracing).
    They run on the request path: keep them to a few dict updates, and never raise."""
    rejected: list[Callable[[Call], None]] = field(default_factory=list)
    """Every feature: told of each call rejected at admission (no valid key, a key not for the feature),
    which never reaches the recorders; the same rules."""


def build_stages(feature: Feature, services: Services) -> list[Stage]:
    """The stages a feature runs, outermost first. This is the one place the order is decided:

        admit -> record -> inspect input (contract, injection screen, policy) -> limit -> fallback
              -> policy on the answer -> PII -> cache -> inspect output -> route

    Admission comes first, outside the trace: a request without a valid key must not be able to fill
    the trace store (a rejection is counted in the metrics, not recorded). Limits come after the input
    contract (not before, as a first sketch had it): a typed call's prompt only exists once its input is
    rendered, and its tokens are what the limits and budgets count.
    Fallback sits outside the cache and the output contract, so that a contract no route can meet
    still gets the feature's fallback_response, and fallbacks are never cached. The policy's output
    rules sit just inside it (a rule with ``action: fallback`` gets the fallback_response) and outside
    PII and the cache, so they judge the answer the client would get, cached or not.
    """
    spec = feature.spec
    record = Record(services.submit, services.observers.get(feature.name), services.recorders)
    stages: list[Stage] = [Admit(services.auth, services.keys, services.rejected), record, InputContract()]
    if spec.quality is not None:
        stages.append(QualityStage(spec.quality))  # counts what arrives, as it arrived (before any redaction)
    guard = spec.guard
    if guard is not None and guard.injection is not None:
        stages.append(InjectionScreen(guard.injection))  # before limits: a blocked call costs nothing
    policy = compile_policy(guard.policy, feature.name) if guard is not None and guard.policy else None
    if policy is not None and policy.applies("input"):
        stages.append(PolicyGuard(policy, "input"))  # likewise
    may_limit = spec.limits or spec.budget or spec.max_input_tokens or services.tenants or services.auth == "keys"
    if may_limit:
        stages.append(
            Limit(
                services.state,
                feature=feature.name,
                limits=spec.limits,
                budget=spec.budget,
                tenants=services.tenants,
                background=services.background,
            )
        )
    stages.append(Fallback())
    if policy is not None and policy.applies("output"):
        stages.append(PolicyGuard(policy, "output"))
    if guard is not None and guard.pii is not None:
        # Outside the cache: what is cached (and keyed) is the redacted request and the provider's
        # answer with its placeholders, restored per call with that call's own mapping.
        stages.append(PiiGuard(guard.pii, feature.name))
    if spec.cache is not None and (spec.cache.exact or spec.cache.semantic):
        stages.append(Cache(services.state, spec.cache, services.background, services.embedder))
    stages.append(OutputContract())
    return stages


def build_pipeline(stages: Sequence[Stage], route: Route) -> Next:
    return fold(stages, route.handle)
