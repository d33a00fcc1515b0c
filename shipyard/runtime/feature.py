"""A feature ready to run: its spec with everything compiled once at start (schemas, templates)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jsonschema
import orjson

from ..config import FeatureSpec, RetentionSpec, template_environment
from ..economics.pricing import Price
from ..errors import InputValidationError
from .concurrency import ConcurrencyLimit
from .resilience import Backoff


def _validator(schema: dict[str, Any] | None) -> Any:
    if schema is None:
        return None
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(validator: Any, value: Any) -> list[dict[str, str]]:
    """Each failing field as ``{"path": "$.a.b", "message": ...}``, deepest-first order of the schema."""
    out = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        out.append({"path": path, "message": err.message})
    return out


def describe(problems: list[dict[str, str]]) -> str:
    """Schema problems on one line: ``$.a: too short; $.b: not one of ...``."""
    return "; ".join(f"{p['path']}: {p['message']}" for p in problems)


@dataclass(eq=False)
class Feature:
    name: str
    spec: FeatureSpec
    breakers: list[Any]  # one per route: admit() / record() / release(), local or shared (state)
    backoff: Backoff
    prices: list[Price | None] = field(default_factory=list)  # one per route; None: unpriced
    gates: list[ConcurrencyLimit | None] = field(default_factory=list)  # one per route
    latencies: list[deque[float]] = field(default_factory=list)  # recent successful attempts, ms, per route
    input_validator: Any = None
    output_validator: Any = None
    templates: list[tuple[str, jinja2.Template]] | None = None
    pipeline: Any = field(default=None, repr=False)
    retention: RetentionSpec = field(default_factory=RetentionSpec)  # the feature's own, or the config's

    def hedge_delay_s(self, route: int) -> float | None:
        """How long to wait for ``route`` before hedging: its recent latency percentile, or the fixed delay."""
        hedge = self.spec.hedge
        if hedge is None:
            return None
        seen = self.latencies[route] if self.latencies else ()
        if hedge.percentile is not None and len(seen) >= 20:
            ordered = sorted(seen)
            at = ordered[min(len(ordered) - 1, int(len(ordered) * hedge.percentile / 100.0))]
            return max(at, hedge.min_ms) / 1000.0
        return hedge.after_ms / 1000.0 if hedge.after_ms is not None else None

    @property
    def cheaper_route(self) -> int | None:
        """The first route after the first that costs less per token: where a budget downgrades to."""
        first = self.prices[0] if self.prices else None
        if first is None:
            return None
        for i, price in enumerate(self.prices[1:], start=1):
            if price is not None and price.input + price.output < first.input + first.output:
                return i
        return None

    @classmethod
    def build(
        cls, name: str, spec: FeatureSpec, breakers: list[Any], backoff: Backoff, prices: list[Price | None] | None = None
    ) -> Feature:
        templates = None
        if spec.prompt is not None:
            env = template_environment()
            templates = [(m.role, env.from_string(m.content)) for m in spec.prompt]
        return cls(
            name=name,
            spec=spec,
            breakers=breakers,
            backoff=backoff,
            prices=prices if prices is not None else [None] * len(spec.route),
            gates=[
                ConcurrencyLimit(c.max_in_flight, max_queue=c.max_queue, queue_timeout_s=c.queue_timeout_ms / 1000.0)
                if (c := spec.concurrency) is not None else None
                for _ in spec.route
            ],
            latencies=[deque(maxlen=200) for _ in spec.route],
            input_validator=_validator(spec.input_schema),
            output_validator=_validator(spec.output_schema),
            templates=templates,
        )

    def render(self, data: Any) -> list[dict[str, str]]:
        """The chat messages for a typed input: the prompt rendered over the input's fields."""
        if self.templates is None:
            return [{"role": "user", "content": orjson.dumps(data).decode()}]
        context = data if isinstance(data, dict) else {"input": data}
        try:
            return [{"role": role, "content": template.render(**context)} for role, template in self.templates]
        except jinja2.UndefinedError as exc:
            raise InputValidationError(
                f"the prompt of {self.name} uses a field the input does not have: {exc.message}",
                details=[{"path": "$", "message": exc.message or "undefined"}],
            ) from None
        except jinja2.TemplateError as exc:
            raise InputValidationError(f"the prompt of {self.name} could not be rendered: {exc}") from None
