"""Running a dataset through a feature: the same pipeline as production (guards, contracts, limits, routes),
cases in parallel, each case ``repeat`` times, every finished case written to the store at once (so an
interrupted run resumes where it stopped), and every model answer cached on disk by (route config, request,
repeat index), so that running new or changed checks over the same answers costs nothing.

The cache sits innermost, in place of the provider call: a cached answer still goes through the output
contract, the PII restore and the policy rules of the current config, and keeps the latency and cost it
had when it was paid for (so latency and cost checks judge the model, not the cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..errors import ShipyardError
from ..providers._format import message_text
from ..runtime.call import Call
from ..runtime.pipeline import build_pipeline, build_stages
from ..runtime.stages import Next
from .cases import Case
from .checks import CheckSpec, Observation
from .online import EVAL_TENANT, findings_of, json_or_none


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


class AnswerCache:
    """The innermost stage of an evaluation run: a provider answer from the store, or the provider's,
    kept. Keyed by the feature's routes, the request as the provider would get it, and the repeat index
    (``--repeat 3`` wants three answers, each cached)."""

    def __init__(self, evals: Any, routes: list[dict[str, Any]], *, read: bool = True) -> None:
        self.evals = evals
        self.routes = routes
        self.read = read

    def key(self, call: Call) -> str:
        material = {"routes": self.routes, "op": call.op, "body": call.body,
                    "from": call.route_from, "only": call.route_only, "repeat": call.metadata.get("eval_repeat", 0)}
        return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()

    async def handle(self, call: Call, next: Next) -> Any:
        key = self.key(call)
        if self.read:
            hit = await asyncio.to_thread(self.evals.cache_get, key)
            if hit is not None:
                call.route, call.route_index = hit["route"], hit["route_index"]
                call.metadata["eval_cached"] = True
                call.metadata["eval_latency_ms"] = call.metadata.get("eval_latency_ms", 0.0) + hit["latency_ms"]
                call.metadata["eval_cost_usd"] = (call.metadata.get("eval_cost_usd") or 0.0) + (hit["cost_usd"] or 0.0)
                return hit["completion"]
        t0, cost0 = time.monotonic(), call.cost_nano or 0
        result = await next(call)
        latency = (time.monotonic() - t0) * 1000
        cost = ((call.cost_nano or 0) - cost0) / 1e9
        call.metadata["eval_latency_ms"] = call.metadata.get("eval_latency_ms", 0.0) + latency
        call.metadata["eval_cost_usd"] = (call.metadata.get("eval_cost_usd") or 0.0) + cost
        if isinstance(result, dict):
            await asyncio.to_thread(self.evals.cache_put, key, {
                "completion": result, "route": call.route, "route_index": call.route_index,
                "latency_ms": round(latency, 3), "cost_usd": cost,
            })
        return result


class Context:
    """What checks may ask of the runner: a judge model of the config, and sentence embeddings."""

    def __init__(self, gateway: Any, feature: str) -> None:
        self.gateway = gateway
        self.feature = feature
        self.judge_cost_usd = 0.0

    async def judge(self, route: str | None, prompt: list[dict[str, Any]]) -> tuple[str, float | None]:
        spec = self.gateway.config.features[self.feature]
        if route is None:
            provider, model = spec.route[0].provider, spec.route[0].model
        else:
            provider, _, model = route.partition("/")
            if provider not in self.gateway.providers or not model:
                known = ", ".join(sorted(self.gateway.providers))
                raise ShipyardError(f"judge route {route!r} is not provider/model of a configured provider ({known})")
        answer = await asyncio.wait_for(
            self.gateway.providers[provider].complete(model, {"messages": prompt, "temperature": 0}), 120
        )
        usage = answer.get("usage") or {}
        price = self.gateway.prices.lookup(provider, model)
        cost = None
        if price is not None:
            cost = price.cost_nano(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)) / 1e9
            self.judge_cost_usd += cost
        return message_text(answer), cost

    def embed(self, texts: list[str]) -> list[list[float]]:
        from ..economics.semantic import shared_embedder

        return shared_embedder().encode(texts).tolist()


def request_for(feature: Any, case: Case) -> tuple[str, dict[str, Any], Any]:
    """(op, body, input) for a case: a typed feature (one with a prompt) is invoked with the case's input;
    otherwise the input is chat messages (a list) or one user message (text)."""
    data = case.input
    if feature.spec.prompt is not None and not _is_messages(data):
        return "invoke", {}, data
    if _is_messages(data):
        return "chat", {"messages": [dict(m) for m in data]}, None
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    return "chat", {"messages": [{"role": "user", "content": text}]}, None


def _is_messages(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(m, dict) and "role" in m for m in data)


class Runner:
    def __init__(
        self,
        gateway: Any,
        feature: str,
        checks: Sequence[CheckSpec],
        *,
        repeat: int = 1,
        concurrency: int = 4,
        use_cache: bool = True,
    ) -> None:
        self.gateway = gateway
        self.feature = gateway.feature(feature)
        self.checks = list(checks)
        self.repeat = repeat
        self.concurrency = concurrency
        self.evals = gateway.store.evals
        self.ctx = Context(gateway, feature)
        routes = [r.model_dump() for r in self.feature.spec.route]
        stages = [*build_stages(self.feature, gateway.services), AnswerCache(self.evals, routes, read=use_cache)]
        self.pipeline = build_pipeline(stages, gateway.router)

    def check_specs(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "type": c.type, "severity": c.severity, "weight": c.effective_weight}
                for c in self.checks]

    async def start(self, *, release: str | None = None, dataset: str | None = None) -> str:
        """Record a new run (its checks, repeat, dataset) and return its id."""
        run_id = new_run_id()
        await asyncio.to_thread(
            self.evals.create_run, run_id, feature=self.feature.name, release=release, dataset=dataset,
            repeat=self.repeat, checks=self.check_specs(),
        )
        return run_id

    async def run(
        self,
        cases: Sequence[Case],
        *,
        run_id: str | None = None,
        release: str | None = None,
        dataset: str | None = None,
        on_case: Callable[[str, bool], None] | None = None,
    ) -> str:
        """Run every case not already done in ``run_id`` (a new run when None); returns the run id.
        ``on_case(case_id, passed)`` is told as each case finishes (a progress bar)."""
        await self.gateway.start()
        if run_id is None:
            run_id = await self.start(release=release, dataset=dataset)
        done = await asyncio.to_thread(self.evals.results, run_id)
        todo = [(i, c) for i, c in enumerate(cases) if c.id not in done]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(order: int, case: Case) -> None:
            async with gate:
                attempts = [await self.attempt(case, r) for r in range(self.repeat)]
            record = {"id": case.id, "order": order, "segment": case.segment, "severity": case.severity}
            await asyncio.to_thread(self.evals.save_result, run_id, record, attempts)
            if on_case is not None:
                on_case(case.id, all(a["error"] is None and all(c["passed"] for c in a["checks"].values())
                                     for a in attempts))

        await asyncio.gather(*(one(i, c) for i, c in todo))
        return run_id

    async def attempt(self, case: Case, repeat: int) -> dict[str, Any]:
        """One run of one case through the pipeline, and every check's verdict on it."""
        op, body, data = request_for(self.feature, case)
        call = self.gateway.new_call(self.feature.name, op, body, input=data, tenant=EVAL_TENANT)
        call.metadata["eval_repeat"] = repeat
        error: str | None = None
        result: Any = None
        try:
            result = await self.pipeline(call)
        except ShipyardError as exc:
            error = f"{exc.code}: {exc.message}"
        text = message_text(result) if isinstance(result, dict) else ""
        output = call.output if op == "invoke" else json_or_none(text)
        findings = findings_of(call)
        cached = bool(call.metadata.get("eval_cached"))
        latency = call.metadata.get("eval_latency_ms", call.elapsed_ms())
        cost = call.metadata.get("eval_cost_usd", call.cost_usd)
        obs = Observation(case=case, output=output, text=text, findings=findings, latency_ms=latency,
                          cost_usd=cost, error=error)
        verdicts: dict[str, dict[str, Any]] = {}
        for check in self.checks:
            verdict = await check.run(obs, self.ctx)  # never raises: a broken check is a failed one
            verdicts[check.name] = {"passed": bool(verdict.passed), "score": float(verdict.score),
                                    "detail": verdict.detail, "errored": verdict.errored,
                                    "cost_usd": verdict.cost_usd}
        return {"output": output, "text": text, "latency_ms": round(latency, 3), "cost_usd": cost,
                "error": error, "trace_id": call.trace_id, "cached": cached, "findings": findings,
                "checks": verdicts}
