"""Running a dataset through a feature: the same pipeline as production (guards, contracts, routes), cases
in parallel, each case ``repeat`` times, every finished case written to the store at once (so an
interrupted run resumes where it stopped), and every model answer cached on disk by (route config,
provider config, request, repeat index), so that running new or changed checks over the same answers
costs nothing. The judge's answers are cached the same way.

Two production stages are left out: the response cache (an evaluation must neither be answered from
production's cache, which would make ``--repeat`` ask once, nor fill it) and the rate limits and budgets
(a run of 500 cases is not production traffic, and must not spend production's allowance). The size
limit (``max_input_tokens``) stays: a case too large for production fails as it would there. The calls
are still traced, with their cost, under tenant ``eval``.

The answer cache sits innermost, in place of the provider call: a cached answer still goes through the
output contract, the PII restore and the policy rules of the current config, and keeps the latency and
cost it had when it was paid for (so latency and cost checks judge the model, not the cache).

Nothing of a case's answer reaches the store raw: outputs, texts, errors and check details are stored
redacted (``store.content.scrub``: each PII entity replaced by its type, ``[EMAIL]``), and so are cached
answers. The checks judge the real answer first; a replayed (cached) answer, though, is the redacted one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..economics.pricing import estimate_prompt_tokens
from ..errors import PayloadTooLarge, ShipyardError
from ..providers._format import message_text
from ..runtime.caching import Cache
from ..runtime.call import Call
from ..runtime.limits import Limit
from ..runtime.pipeline import build_pipeline, build_stages
from ..runtime.stages import Next, Stage
from ..store.content import scrub
from .cases import Case
from .checks import CheckSpec, Observation
from .online import EVAL_TENANT, findings_of, json_or_none

_log = logging.getLogger("shipyard.eval")

# Settings left out of a provider's digest: a secret must not be hashed onto disk, and rotating a key
# does not change what the model answers.
_SECRET = re.compile(r"(^|[_-])(api[_-]?key|key|secret|password|token|authorization)$", re.IGNORECASE)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a dataset's: ``--resume`` refuses a run whose cases changed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_digest(case: Case) -> str:
    """sha256 of the canonical JSON of a case's input and expected value."""
    return hashlib.sha256(_canonical({"input": case.input, "expected": case.expected})).hexdigest()


def _public(value: Any) -> Any:
    """A provider's settings without its secrets (see ``_SECRET``)."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not (isinstance(k, str) and _SECRET.search(k))}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def provider_digest(gateway: Any, names: Sequence[str]) -> str:
    """sha256 of the config of the providers named (kind, base_url, ...; secrets left out), so that a
    provider pointed at another endpoint does not replay what the old one answered."""
    providers = gateway.config.model.providers
    specs = {name: _public(providers[name].model_dump(mode="json")) if name in providers else None
             for name in sorted(set(names))}
    return hashlib.sha256(_canonical(specs)).hexdigest()


class _Warned:
    """Log a problem once per instance: a store that cannot be written fails every case the same way."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def __call__(self, what: str, exc: BaseException) -> None:
        if what not in self._said:
            self._said.add(what)
            _log.warning("%s failed (%s: %s); the evaluation goes on without it", what, type(exc).__name__, exc)


class InputSize:
    """Production's size limit (``max_input_tokens``) without its rate limits and budgets (see the module doc)."""

    async def handle(self, call: Call, next: Next) -> Any:
        limit = call.feature.spec.max_input_tokens
        estimate = estimate_prompt_tokens(call.body)
        if limit is not None and estimate > limit:
            raise PayloadTooLarge(
                f"the request is about {estimate} tokens; {call.feature.name} takes at most {limit} "
                "(max_input_tokens). Shorten the messages."
            )
        return await next(call)


class AnswerCache:
    """The innermost stage of an evaluation run: a provider answer from the store, or the provider's,
    kept (redacted). Keyed by the feature's routes, the config of their providers, the request as the
    provider would get it, and the repeat index (``--repeat 3`` wants three answers, each cached). The
    cache is a convenience: failing to read or write it never fails a case (it is logged once)."""

    def __init__(self, evals: Any, routes: list[dict[str, Any]], *, read: bool = True, providers: str = "") -> None:
        self.evals = evals
        self.routes = routes
        self.providers = providers
        self.read = read
        self._warn = _Warned()

    def key(self, call: Call) -> str:
        material = {"routes": self.routes, "providers": self.providers, "op": call.op, "body": call.body,
                    "from": call.route_from, "only": call.route_only, "repeat": call.metadata.get("eval_repeat", 0)}
        return hashlib.sha256(_canonical(material)).hexdigest()

    async def handle(self, call: Call, next: Next) -> Any:
        key = self.key(call)
        if self.read:
            try:
                hit = await asyncio.to_thread(self.evals.cache_get, key)
            except Exception as exc:  # noqa: BLE001 - a miss, then
                self._warn("reading the evaluation cache", exc)
                hit = None
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
            entry = {"completion": result, "route": call.route, "route_index": call.route_index,
                     "latency_ms": round(latency, 3), "cost_usd": cost}
            await asyncio.to_thread(self._put, key, entry)
        return result

    def _put(self, key: str, entry: dict[str, Any]) -> None:
        try:
            self.evals.cache_put(key, {**entry, "completion": scrub(entry["completion"])})
        except Exception as exc:  # noqa: BLE001 - the answer is in hand; the next run asks again
            self._warn("writing the evaluation cache", exc)


class Context:
    """What checks may ask of the runner: a judge model of the config, and sentence embeddings.

    With ``cache`` (an evaluation run, unless ``--no-cache``), the judge's answers are kept in the answer
    cache by (route, provider config, redacted prompt), redacted: re-running the checks asks the judge
    nothing and costs nothing. Online evaluation (production traffic) does not cache."""

    def __init__(self, gateway: Any, feature: str, *, cache: bool = False) -> None:
        self.gateway = gateway
        self.feature = feature
        self.cache = cache
        self.judge_cost_usd = 0.0
        self._warn = _Warned()

    def judge_route(self, route: str | None) -> tuple[str, str]:
        """(provider, model) of a judge route; None: the feature's first route."""
        if route is None:
            spec = self.gateway.config.features[self.feature]
            return spec.route[0].provider, spec.route[0].model
        provider, _, model = route.partition("/")
        if provider not in self.gateway.providers or not model:
            known = ", ".join(sorted(self.gateway.providers))
            raise ShipyardError(f"judge route {route!r} is not provider/model of a configured provider ({known})")
        return provider, model

    def judge_price(self, route: str | None) -> Any:
        """The judge's Price; None when the config prices it nowhere (its cost is unknown). In-process
        models cost nothing, as in the gateway."""
        provider, model = self.judge_route(route)
        price = self.gateway.prices.lookup(provider, model)
        if price is None and self.gateway.config.model.providers[provider].kind == "python":
            from ..economics.pricing import Price

            price = Price(0.0, 0.0)
        return price

    async def judge(self, route: str | None, prompt: list[dict[str, Any]]) -> tuple[str, float | None]:
        provider, model = self.judge_route(route)
        key = None
        if self.cache:
            # Keyed by the prompt as redacted: a replayed answer is the redacted one (see the module doc),
            # and its judgement is the one the real answer got.
            material = {"judge": f"{provider}/{model}", "provider": provider_digest(self.gateway, [provider]),
                        "prompt": await asyncio.to_thread(scrub, prompt)}
            key = hashlib.sha256(_canonical(material)).hexdigest()
            try:
                hit = await asyncio.to_thread(self.gateway.store.evals.cache_get, key)
            except Exception as exc:  # noqa: BLE001 - a miss, then
                self._warn("reading the judge cache", exc)
                hit = None
            if isinstance(hit, dict) and isinstance(hit.get("judge"), str):
                return hit["judge"], 0.0  # paid for before: asking again costs nothing
        answer = await asyncio.wait_for(
            self.gateway.providers[provider].complete(model, {"messages": prompt, "temperature": 0}), 120
        )
        usage = answer.get("usage") or {}
        price = self.judge_price(route)
        cost = None
        if price is not None:
            cost = price.cost_nano(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)) / 1e9
            self.judge_cost_usd += cost
        text = message_text(answer)
        if key is not None:
            await asyncio.to_thread(self._put, key, text, cost)
        return text, cost

    def _put(self, key: str, text: str, cost: float | None) -> None:
        try:
            self.gateway.store.evals.cache_put(key, {"judge": scrub(text), "cost_usd": cost})
        except Exception as exc:  # noqa: BLE001 - the verdict is in hand; the next run asks again
            self._warn("writing the judge cache", exc)

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


def evaluation_stages(feature: Any, services: Any) -> list[Stage]:
    """The feature's production stages without the response cache and the rate limits and budgets (the
    size limit stays, see the module doc)."""
    stages: list[Stage] = []
    for stage in build_stages(feature, services):
        if isinstance(stage, Limit):
            if feature.spec.max_input_tokens is not None:
                stages.append(InputSize())
        elif not isinstance(stage, Cache):
            stages.append(stage)
    return stages


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
        self.ctx = Context(gateway, feature, cache=use_cache)
        routes = [r.model_dump() for r in self.feature.spec.route]
        providers = provider_digest(gateway, [r.provider for r in self.feature.spec.route])
        stages = [*evaluation_stages(self.feature, gateway.services),
                  AnswerCache(self.evals, routes, read=use_cache, providers=providers)]
        self.pipeline = build_pipeline(stages, gateway.router)

    def check_specs(self) -> list[dict[str, Any]]:
        """What a run records of its checks: name, type, severity and weight (what scoring reads), and a
        digest of the whole check, so that ``--resume`` notices any change of a check."""
        return [{"name": c.name, "type": c.type, "severity": c.severity, "weight": c.effective_weight,
                 "digest": hashlib.sha256(c.model_dump_json().encode()).hexdigest()[:16]}
                for c in self.checks]

    def resume_conflict(self, run: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]],
                        cases: Sequence[Case]) -> str | None:
        """Why run ``run`` (its row) cannot be finished with these checks and cases, None if it can: its
        checks changed, or a case it has done changed or left the dataset (the run would mix two)."""
        if _canonical(run.get("checks") or []) != _canonical(self.check_specs()):
            return (f"the checks of {self.feature.name} changed since run {run['run_id']} started; its finished "
                    "cases were judged by the old ones. Start a new run (without --resume)")
        by_id = {c.id: c for c in cases}
        for case_id, result in done.items():
            current = by_id.get(case_id)
            stored = (result.get("case") or {}).get("input_digest")
            if current is None or stored != input_digest(current):
                what = "is no longer in" if current is None else "changed in"
                return (f"the dataset changed since run {run['run_id']} started: case {case_id!r} {what} it. "
                        "Start a new run (without --resume), or resume with the dataset the run started with")
        return None

    async def start(self, *, release: str | None = None, dataset: str | None = None,
                    dataset_digest: str | None = None) -> str:
        """Record a new run (its checks, repeat, dataset and the dataset's digest) and return its id."""
        run_id = new_run_id()
        if dataset_digest is None and dataset is not None:
            try:
                dataset_digest = await asyncio.to_thread(file_digest, dataset)
            except OSError:
                dataset_digest = None
        await asyncio.to_thread(
            self.evals.create_run, run_id, feature=self.feature.name, release=release, dataset=dataset,
            repeat=self.repeat, checks=self.check_specs(), dataset_digest=dataset_digest,
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
            record = {"id": case.id, "order": order, "segment": case.segment, "severity": case.severity,
                      "input_digest": input_digest(case)}
            await asyncio.to_thread(self.evals.save_result, run_id, record, attempts)
            if on_case is not None:
                on_case(case.id, all(a["error"] is None and all(c["passed"] for c in a["checks"].values())
                                     for a in attempts))

        await asyncio.gather(*(one(i, c) for i, c in todo))
        return run_id

    async def attempt(self, case: Case, repeat: int) -> dict[str, Any]:
        """One run of one case through the pipeline, and every check's verdict on it (judged on the real
        answer; returned redacted, as it is stored)."""
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
        # What reaches the store: the answer and every text that may quote it (or the case) redacted.
        names = list(verdicts)
        redacted = await asyncio.to_thread(scrub, {"output": output, "text": text, "error": error,
                                                   "details": [verdicts[n]["detail"] for n in names]})
        for name, detail in zip(names, redacted["details"], strict=True):
            verdicts[name]["detail"] = detail
        return {"output": redacted["output"], "text": redacted["text"], "latency_ms": round(latency, 3),
                "cost_usd": cost, "error": redacted["error"], "trace_id": call.trace_id, "cached": cached,
                "findings": findings, "checks": verdicts}
