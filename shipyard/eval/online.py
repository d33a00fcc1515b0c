"""Online evaluation: a sampled share of production calls scored in the background by the feature's checks
that need no reference (schema, guards, judge, latency, cost, patterns, custom), per segment, stored for
monitoring.

Sampling is deterministic on the trace id (its first 8 hex digits as a fraction), so every replica, and a
replica restarted, samples the same calls. Scoring never runs on the request path: the call is observed as
its trace is recorded, and the checks run as background work. A judge's cost is bounded per UTC day
(``usd_per_day``, per process): once spent, calls are still sampled and scored by the free checks, and
the judge checks are skipped (recorded as such).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import ShipyardError
from ..runtime.stages import parse_json_answer
from .cases import Case
from .checks import CheckResult, CheckSpec, Observation

EVAL_TENANT = "eval"  # the tenant of an evaluation run's calls (runner.py)

_log = logging.getLogger("shipyard.eval")


def json_or_none(text: str) -> Any:
    """The JSON an answer's text holds (whole, or in a ```json fence), None if it holds none."""
    try:
        return parse_json_answer(text)
    except ValueError:
        return None


def findings_of(call: Any) -> list[dict[str, Any]]:
    """A call's guard findings, in the shape checks read."""
    return [{k: e.get(k) for k in ("guard", "rule", "severity", "action", "where")}
            for e in call.events if e["kind"] == "finding"]


def sampled(trace_id: str, share: float) -> bool:
    """Whether a call is in the sample: its trace id's first 32 bits as a fraction, below ``share``."""
    try:
        return int(trace_id[:8], 16) / 0x1_0000_0000 < share
    except ValueError:
        return False


class OnlineEvaluator:
    def __init__(self, feature: str, checks: list[CheckSpec], *, share: float, usd_per_day: float,
                 segments: list[str], ctx: Any, background: Any, evals: Any) -> None:
        self.feature = feature
        self.checks = [c for c in checks if c.reference_free]
        self.share = share
        self.usd_per_day = usd_per_day
        self.segments = segments
        self.ctx = ctx
        self.background = background
        self.evals = evals
        self._day = ""
        self._spent = 0.0
        self.scored = 0
        self.skipped_judge = 0

    def observe(self, call: Any, answer: str | None) -> None:
        """Called as a call's trace is recorded: schedule its scoring if it is in the sample."""
        if call.status not in ("ok", "fallback") or not sampled(call.trace_id, self.share):
            return
        if call.tenant == EVAL_TENANT:  # an evaluation run's own call is scored by the run
            return
        self.background.spawn(self.score(call, answer))

    def segment_of(self, call: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        given = call.metadata.get("segment") or {}
        data = call.input if isinstance(call.input, dict) else {}
        for key in self.segments:
            value = given.get(key, data.get(key))
            if value is not None:
                out[key] = str(value)[:64]
        return out

    def _budget_left(self) -> bool:
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if today != self._day:
            self._day, self._spent = today, 0.0
        return self._spent < self.usd_per_day

    async def score(self, call: Any, answer: str | None) -> None:
        text = answer or ""
        output = call.output if call.op == "invoke" else json_or_none(text)
        findings = findings_of(call)
        obs = Observation(case=Case(id=call.trace_id, input=call.input, expected=None, segment={}, severity=None,
                                    meta={}),
                          output=output, text=text, findings=findings, latency_ms=call.elapsed_ms(),
                          cost_usd=call.cost_usd, error=None)
        results: dict[str, dict[str, Any]] = {}
        cost = 0.0
        for check in self.checks:
            if check.type == "llm_judge" and not self._budget_left():
                self.skipped_judge += 1
                results[check.name] = {"passed": None, "score": None, "detail": "skipped: usd_per_day spent"}
                continue
            before = self.ctx.judge_cost_usd
            try:
                verdict = await check.run(obs, self.ctx)
            except (ShipyardError, Exception) as exc:  # noqa: BLE001 - a broken check is a failed check
                verdict = CheckResult(False, 0.0, f"the check raised {type(exc).__name__}: {exc}")
            spent = self.ctx.judge_cost_usd - before
            self._spent += spent
            cost += spent
            results[check.name] = {"passed": bool(verdict.passed), "score": float(verdict.score),
                                   "detail": verdict.detail}
        judged = [r for r in results.values() if r["passed"] is not None]
        weights = {c.name: c.effective_weight for c in self.checks}
        total = sum(weights[n] for n, r in results.items() if r["passed"] is not None) or 1.0
        row = {
            "trace_id": call.trace_id, "feature": self.feature, "at": time.time(), "segment": self.segment_of(call),
            "passed": all(r["passed"] for r in judged),
            "score": sum(weights[n] * r["score"] for n, r in results.items() if r["passed"] is not None) / total,
            "checks": results, "cost_usd": cost or None,
        }
        try:
            await asyncio.to_thread(self.evals.add_online, [row])
            self.scored += 1
        except Exception as exc:  # noqa: BLE001 - monitoring data; the call itself is long answered
            _log.warning("online evaluation of %s could not be stored: %s", call.trace_id, exc)
