"""Online evaluation: a sampled share of production calls scored in the background by the feature's checks
that need no reference (schema, guards, judge, latency, cost, patterns, custom), per segment, stored for
monitoring.

Sampling is deterministic on the trace id (its first 8 hex digits as a fraction), so every replica, and a
replica restarted, samples the same calls. Scoring never runs on the request path: the call is observed as
its trace is recorded, and the checks run as background work, at most ``max_in_flight`` calls at once
(past that a sampled call is not scored, and counted in ``dropped``); ``aclose`` lets them finish for a
moment, then cancels the rest.

The checks judge redacted text: the call's input (a chat call's messages as the provider got them, already
redacted in place when the feature has a PII guard; an invoke call's input) and its answer have every PII
entity replaced by its type (``[EMAIL]``) before any check, a judge model above all, sees them. What is
stored is the verdicts only ({passed, score, detail}, the details redacted too) and the call's subject
as a digest, so that erasing a subject finds its scores even after the traces are gone.

A judge's cost is bounded per UTC day (``usd_per_day``, per process): judge checks run one at a time, the
budget is looked at just before each, and each costs what its own result says it cost. A judge with no
price (its cost unknown) counts as the whole day's budget, so it judges once a day (and a warning says to
price it). Once spent, calls are still sampled and scored by the free checks, and the judge checks are
skipped (recorded as such).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import ShipyardError
from ..runtime.stages import parse_json_answer
from ..store.content import redact_text, scrub, subject_digest
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
    """The background scorer of one feature's sampled production calls (see the module doc). Counts
    ``scored``, ``skipped_judge`` (judge checks past the day's budget) and ``dropped`` (sampled calls not
    scored because ``max_in_flight`` were already being scored)."""

    def __init__(self, feature: str, checks: list[CheckSpec], *, share: float, usd_per_day: float,
                 segments: list[str], ctx: Any, background: Any = None, evals: Any,
                 max_in_flight: int = 64) -> None:
        """``background``: the gateway's Background, which is also told of each scoring task, so that
        draining it waits for them; ``aclose`` is the bounded way to stop them."""
        self.feature = feature
        self.checks = [c for c in checks if c.reference_free]
        self.share = share
        self.usd_per_day = usd_per_day
        self.segments = segments
        self.ctx = ctx
        self.background = background
        self.evals = evals
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._judging: asyncio.Lock | None = None  # one judge at a time: the budget is read just before each
        self._judging_loop: Any = None
        self._closed = False
        self._day = ""
        self._spent = 0.0
        self._warned_unpriced = False
        self.scored = 0
        self.skipped_judge = 0
        self.dropped = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def observe(self, call: Any, answer: str | None) -> None:
        """Called as a call's trace is recorded: schedule its scoring if it is in the sample."""
        if self._closed or call.status not in ("ok", "fallback") or not sampled(call.trace_id, self.share):
            return
        if call.tenant == EVAL_TENANT:  # an evaluation run's own call is scored by the run
            return
        if len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self.score(call, answer))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        if self.background is not None:
            self.background.spawn(_settled(task))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("online evaluation failed: %r", task.exception())

    async def aclose(self, grace_s: float = 2.0) -> None:
        """Stop scoring: no new call is taken, those in flight get ``grace_s`` seconds, the rest are
        cancelled (their calls are not scored). Safe to call twice."""
        self._closed = True
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def segment_of(self, call: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        given = call.metadata.get("segment") or {}
        data = call.input if isinstance(call.input, dict) else {}
        for key in self.segments:
            value = given.get(key, data.get(key))
            if value is not None:
                out[key] = str(value)[:64]
        return out

    def _remaining(self) -> float:
        """What the judge may still spend today."""
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if today != self._day:
            self._day, self._spent = today, 0.0
        return self.usd_per_day - self._spent

    def _unpriced(self, check: Any) -> bool:
        """Whether the judge of ``check`` has no price, so that its cost is unknown."""
        price_of = getattr(self.ctx, "judge_price", None)
        if price_of is None:
            return True
        try:
            return bool(price_of(check.route) is None)
        except Exception:  # noqa: BLE001 - a route the judge cannot use: it was never asked
            return False

    async def _judge(self, check: Any, obs: Observation) -> tuple[CheckResult | None, float | None]:
        """(verdict, its cost) of a judge check, or (None, None) when today's budget is spent."""
        loop = asyncio.get_running_loop()
        if self._judging is None or self._judging_loop is not loop:  # a lock serves one event loop
            self._judging, self._judging_loop = asyncio.Lock(), loop
        async with self._judging:
            if self._remaining() <= 0:
                return None, None
            verdict = await _run(check, obs, self.ctx)
            cost = verdict.cost_usd
            if cost is not None:
                self._spent += cost
            elif self._unpriced(check):
                # Unknown: count it as all that is left today, so an unpriced judge asks once a day.
                self._spent += max(self._remaining(), 0.0)
                if not self._warned_unpriced:
                    self._warned_unpriced = True
                    _log.warning(
                        "online evaluation of %s: the judge of check %r has no price, so what it costs is "
                        "unknown; it is counted as the whole usd_per_day (one judgement a day). Add its "
                        "price under pricing: (\"provider/model\": {input: USD_PER_M, output: USD_PER_M})",
                        self.feature, check.name)
            # else: a priced judge that failed before answering; nothing was billed
            return verdict, cost

    async def score(self, call: Any, answer: str | None) -> None:
        data = call.body.get("messages") if call.op == "chat" else call.input
        output = call.output if call.op == "invoke" else None
        seen = await asyncio.to_thread(scrub, {"input": data, "text": answer or "", "output": output,
                                               "segment": self.segment_of(call)})
        text = seen["text"]
        if call.op != "invoke":
            output = json_or_none(text)
        else:
            output = seen["output"]
        obs = Observation(case=Case(id=call.trace_id, input=seen["input"], expected=None, segment={},
                                    severity=None, meta={}),
                          output=output, text=text, findings=findings_of(call), latency_ms=call.elapsed_ms(),
                          cost_usd=call.cost_usd, error=None)
        results: dict[str, dict[str, Any]] = {}
        costs: list[float] = []
        for check in self.checks:
            if check.type == "llm_judge":
                verdict, cost = await self._judge(check, obs)
                if verdict is None:
                    self.skipped_judge += 1
                    results[check.name] = {"passed": None, "score": None, "detail": "skipped: usd_per_day spent"}
                    continue
                if cost is not None:
                    costs.append(cost)
            else:
                verdict = await _run(check, obs, self.ctx)
            results[check.name] = {"passed": bool(verdict.passed), "score": float(verdict.score),
                                   "detail": redact_text(verdict.detail)}
        judged = [r for r in results.values() if r["passed"] is not None]
        weights = {c.name: c.effective_weight for c in self.checks}
        total = sum(weights[n] for n, r in results.items() if r["passed"] is not None) or 1.0
        row = {
            "trace_id": call.trace_id, "feature": self.feature, "at": time.time(), "segment": seen["segment"],
            "passed": all(r["passed"] for r in judged),
            "score": sum(weights[n] * r["score"] for n, r in results.items() if r["passed"] is not None) / total,
            "checks": results, "cost_usd": sum(costs) if costs else None,
            "subject": subject_digest(str(call.subject)) if call.subject is not None else None,
        }
        try:
            await asyncio.to_thread(self.evals.add_online, [row])
            self.scored += 1
        except Exception as exc:  # noqa: BLE001 - monitoring data; the call itself is long answered
            _log.warning("online evaluation of %s could not be stored: %s", call.trace_id, exc)


async def _run(check: Any, obs: Observation, ctx: Any) -> CheckResult:
    try:
        return await check.run(obs, ctx)  # type: ignore[no-any-return]
    except (ShipyardError, Exception) as exc:  # noqa: BLE001 - a broken check is a failed check
        return CheckResult(False, 0.0, f"the check raised {type(exc).__name__}: {exc}")


async def _settled(task: asyncio.Task[None]) -> None:
    """Wait for ``task`` without taking its outcome (the gateway's Background drains this)."""
    await asyncio.wait({task})
