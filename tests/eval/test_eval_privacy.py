"""No raw PII in the evaluation tables: an evaluation run and online scoring of production calls, both fed
PII in the input and in the answers (and by the judge), leave none on disk (the SQLite files scanned byte by
byte); the online checks and judge see redacted text, the chat input included; the online judge spends at
most its budget under concurrent calls; scoring is bounded in flight and stops on aclose."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from shipyard import Gateway, load_config
from shipyard.eval.checks import CheckResult, Observation
from shipyard.eval.online import OnlineEvaluator
from shipyard.runtime.call import Background
from shipyard.store import Store
from shipyard.store.content import subject_digest
from tests.conftest import OWNERS
from tests.eval.test_eval_cli import cli
from tests.fakes import Reply

EMAIL = "ana.lopez@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
IP = "203.0.113.77"
PLANTED = [EMAIL, PHONE, CARD, CARD.replace(" ", ""), IP]
SEEN: list[Observation] = []  # what the echo check was shown


def echo(obs: Observation) -> CheckResult:
    """A python check whose detail quotes everything it was shown (the worst a custom check can do)."""
    SEEN.append(obs)
    return CheckResult(True, 1.0, f"saw {obs.text} about {orjson.dumps(obs.case.input).decode()}")


def privacy_config(primary, backup, online: str = "") -> str:
    return f"""
providers:
  primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
  judge: {{kind: openai, base_url: "{backup.url}", api_key: none}}
pricing:
  judge/judge-model: {{input: 1.0, output: 2.0}}
features:
  support:
    owners: {OWNERS}
    route: [{{provider: primary, model: m, timeout_s: 2}}]
    eval:
      dataset: cases.jsonl
      checks:
        - {{name: right, type: exact, severity: major}}
        - {{name: helpful, type: llm_judge, rubric: "Is the answer helpful?", route: judge/judge-model}}
        - {{name: echo, type: python, function: "tests.eval.test_eval_privacy:echo"}}
{online}
"""


def scan(folder: Path) -> dict[str, list[str]]:
    """Every planted value found in the database files (the WAL too), by file."""
    found: dict[str, list[str]] = {}
    for path in folder.glob("traces.db*"):
        data = path.read_bytes()
        hits = [p for p in PLANTED if p.encode() in data]
        if hits:
            found[path.name] = hits
    return found


def rows(store: Store, table: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]


def test_no_raw_pii_reaches_the_evaluation_tables(primary, backup, write_config, serve):
    SEEN.clear()
    online = "      online: {sample: 1.0, checks: [helpful, echo]}"
    path = write_config(privacy_config(primary, backup, online))
    lines = [orjson.dumps({"id": f"c{i}", "input": f"Refund {i} for {EMAIL}, call {PHONE}, card {CARD}, from {IP}",
                           "expected": {"category": "billing"}}).decode() for i in range(3)]
    (path.parent / "cases.jsonl").write_text("\n".join(lines) + "\n")
    primary.default = Reply(orjson.dumps({"category": "billing", "contact": EMAIL, "phone": PHONE}).decode())
    backup.default = Reply(f'{{"score": 0.9, "reason": "it gives {EMAIL} and {PHONE} back"}}')

    run_id = cli("eval", "run", "support", "--config", path).stdout.strip().splitlines()[-1]
    cli("eval", "run", "support", "--config", path)  # replayed from the cache: the answers are redacted ones
    assert len(primary.requests) == 3 and len(backup.requests) == 3  # the judge's answers are cached too

    served = serve(path)
    for i in range(3):
        r = httpx.post(f"{served.base_url}/v1/chat/completions", headers={"X-Shipyard-Subject": EMAIL},
                       json={"model": "support", "messages": [
                           {"role": "user", "content": f"I am {EMAIL}, phone {PHONE}; where is order {i}?"}]})
        assert r.status_code == 200
    store = Store(load_config(path).model.storage)
    deadline = time.monotonic() + 10
    while len(store.evals.online("support", 0)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    while store.count_traces() < 3 + 6 and time.monotonic() < deadline:
        time.sleep(0.05)

    # the online judge and checks were shown the chat input and the answer, redacted
    online_prompts = [str(r.body) for r in backup.requests[3:]]
    assert len(online_prompts) == 3
    assert all("where is order" in p and "[EMAIL]" in p and EMAIL not in p and PHONE not in p
               for p in online_prompts)
    shown = SEEN[-3:]
    assert all(isinstance(o.case.input, list) and "[EMAIL]" in o.case.input[0]["content"] for o in shown)
    assert all("[EMAIL]" in o.text and EMAIL not in o.text for o in shown)

    # what was stored is there, redacted
    results = rows(store, "eval_results")
    assert len(results) == 6 and all("[EMAIL]" in str(r["attempts"]) for r in results)
    run = store.evals.load_run(run_id)
    attempt = run["cases"][0]["attempts"][0]
    assert attempt["output"]["contact"] == "[EMAIL]" and "[EMAIL]" in attempt["checks"]["right"]["detail"]
    assert "[EMAIL]" in attempt["checks"]["helpful"]["detail"]
    assert run["cases"][0]["input_digest"] and store.evals.get_run(run_id)["dataset_digest"]
    cache = rows(store, "eval_cache")
    assert len(cache) == 3 + 3 and all("[EMAIL]" in str(r["response"]) for r in cache)  # answers and verdicts
    online_rows = store.evals.online("support", 0)
    assert {r["subject"] for r in online_rows} == {subject_digest(EMAIL)}
    assert all(set(r["checks"]["echo"]) == {"passed", "score", "detail"} for r in online_rows)
    assert all("[EMAIL]" in r["checks"]["echo"]["detail"] for r in online_rows)
    assert all(r["cost_usd"] is not None for r in online_rows)
    store.close()

    assert scan(path.parent) == {}


def chat_config(primary, backup, judge_route: str, usd_per_day: float) -> str:
    return f"""
providers:
  primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
  judge: {{kind: openai, base_url: "{backup.url}", api_key: none}}
pricing:
  judge/judge-model: {{input: 1.0, output: 2.0}}
features:
  chatty:
    owners: {OWNERS}
    route: [{{provider: primary, model: m, timeout_s: 2}}]
    eval:
      checks:
        - {{name: judged, type: llm_judge, rubric: "Is it fine?", route: {judge_route}}}
        - {{name: fast, type: latency, max_ms: 100000}}
      online: {{sample: 1.0, usd_per_day: {usd_per_day}}}
"""


async def test_the_online_judge_spends_at_most_its_budget_under_concurrent_calls(primary, backup, write_config):
    backup.default = Reply('{"score": 1, "reason": "fine"}',
                           usage={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100})
    # $0.0012 a judgement: $0.01 a day pays for 8, and a 9th is asked while 0.0096 < 0.01
    path = write_config(chat_config(primary, backup, "judge/judge-model", 0.01))
    async with Gateway.from_config(path) as gw:
        await asyncio.gather(*(gw.chat("chatty", [{"role": "user", "content": f"q{i}"}]) for i in range(20)))
        await gw.services.background.drain()
        evaluator = gw.online["chatty"]
        stored = await asyncio.to_thread(gw.store.evals.online, "chatty", 0)
    assert len(backup.requests) == 9
    assert evaluator.scored == 20 and evaluator.skipped_judge == 11
    assert sum(r["cost_usd"] or 0 for r in stored) == pytest.approx(9 * 0.0012)
    judged = [r for r in stored if r["checks"]["judged"]["passed"] is not None]
    assert len(judged) == 9 and all(r["cost_usd"] == pytest.approx(0.0012) for r in judged)
    assert all(r["checks"]["fast"]["passed"] for r in stored)  # the free checks go on


async def test_a_judge_without_a_price_judges_once_a_day_and_says_to_price_it(primary, backup, write_config, caplog):
    primary.default = Reply('{"score": 1, "reason": "fine"}')
    path = write_config(chat_config(primary, backup, "primary/unpriced-judge", 100.0))
    with caplog.at_level(logging.WARNING, logger="shipyard.eval"):
        async with Gateway.from_config(path) as gw:
            await asyncio.gather(*(gw.chat("chatty", [{"role": "user", "content": f"q{i}"}]) for i in range(20)))
            await gw.services.background.drain()
            evaluator = gw.online["chatty"]
    judged = [r for r in primary.requests if isinstance(r.body, dict) and r.body.get("model") == "unpriced-judge"]
    assert len(judged) == 1 and evaluator.skipped_judge == 19
    warnings = [r for r in caplog.records if "has no price" in r.getMessage()]
    assert len(warnings) == 1 and "pricing" in warnings[0].getMessage()


class Slow:
    """A reference-free check that waits until released."""

    name, type, reference_free, effective_weight = "slow", "python", True, 1.0

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(self, obs: Observation, ctx: Any) -> CheckResult:
        await self.release.wait()
        return CheckResult(True, 1.0, "done")


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add_online(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)


def fake_call(i: int) -> SimpleNamespace:
    return SimpleNamespace(status="ok", trace_id=f"{i:032x}", tenant=None, op="chat", input=None, output=None,
                           body={"messages": [{"role": "user", "content": "hi"}]}, metadata={}, events=[],
                           subject=None, cost_usd=None, elapsed_ms=lambda: 1.0)


def evaluator(check: Slow, store: Rows, background: Background) -> OnlineEvaluator:
    return OnlineEvaluator("f", [check], share=1.0, usd_per_day=1.0, segments=[], ctx=None,  # type: ignore[list-item]
                           background=background, evals=store)


async def test_scoring_is_bounded_in_flight_and_aclose_cancels_what_does_not_finish_in_time():
    check, store, background = Slow(), Rows(), Background()
    online = evaluator(check, store, background)
    for i in range(70):
        online.observe(fake_call(i), "hello")
    assert online.in_flight == 64 and online.dropped == 6
    await online.aclose(grace_s=0.01)
    assert online.in_flight == 0 and store.rows == []
    await background.drain()  # the gateway's drain does not wait on cancelled scoring
    online.observe(fake_call(99), "hello")  # closed: nothing new is taken
    assert online.in_flight == 0


async def test_aclose_lets_scoring_in_flight_finish_within_the_grace():
    check, store, background = Slow(), Rows(), Background()
    online = evaluator(check, store, background)
    for i in range(5):
        online.observe(fake_call(i), "hello")
    check.release.set()
    await online.aclose(grace_s=10)
    assert online.in_flight == 0 and len(store.rows) == 5 and online.scored == 5
