"""Evaluation runs kept apart from production and safe to resume: no production cache or rate limits, the
answer cache keyed by the providers' config and written by upsert (concurrent duplicates on PostgreSQL),
judge answers cached, --resume refusing changed checks or cases, compare without common cases."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from shipyard import Gateway, load_config
from shipyard.eval.cases import DatasetError, load_cases
from shipyard.eval.runner import Runner, provider_digest
from shipyard.store import Store
from tests.eval.test_eval_cli import CHECKS, cli, config, setup  # noqa: F401 - setup: a fixture
from tests.fakes import Reply
from tests.store.test_store import postgres_url  # noqa: F401 - a fixture

JUDGE = """
    eval:
      checks:
        - {name: polite, type: llm_judge, rubric: "Is the answer a valid category?", route: judge/judge-model}
"""


def last_line(result) -> str:
    return result.stdout.strip().splitlines()[-1]


async def test_repeat_asks_the_provider_every_time_even_with_an_exact_cache(setup, primary):  # noqa: F811
    path = setup(extra="\n    cache: {exact: {ttl_s: 600}}" + CHECKS, n=4, wrong_every=0)
    async with Gateway.from_config(path) as gw:
        runner = Runner(gw, "intent", gw.config.features["intent"].eval.checks, repeat=3)
        run_id = await runner.run(load_cases(path.parent / "cases.jsonl"))
        assert len(primary.requests) == 12  # 4 cases x 3: production's cache answered none of them
        run = await asyncio.to_thread(gw.store.evals.load_run, run_id)
        assert all(a["error"] is None for c in run["cases"] for a in c["attempts"])
        await gw.invoke("intent", {"text": "charge 0"})
        assert len(primary.requests) == 13  # nor did the evaluation fill it
        again = await gw.invoke("intent", {"text": "charge 0"})
        assert again.cache == "exact" and len(primary.requests) == 13  # the production cache works


def test_rate_limits_and_budgets_do_not_apply_to_an_evaluation(setup, primary, tmp_path):  # noqa: F811
    path = setup(extra="\n    limits: {rpm: 3}" + CHECKS, n=6, wrong_every=0)
    cli("eval", "run", "intent", "--config", path, "--json", tmp_path / "r.json")
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    assert report["pass_rate"]["value"] == 1.0 and len(primary.requests) == 6
    assert "rate_limited" not in (tmp_path / "r.json").read_text()


def test_max_input_tokens_still_applies(setup, primary, tmp_path):  # noqa: F811
    path = setup(extra="\n    max_input_tokens: 50" + CHECKS, n=2, wrong_every=0)
    (path.parent / "cases.jsonl").write_text(
        orjson.dumps({"id": "big", "input": {"text": "word " * 400}, "expected": {"category": "billing"}}).decode()
        + "\n" + orjson.dumps({"id": "small", "input": {"text": "hi"}, "expected": {"category": "billing"}}).decode())
    run_id = last_line(cli("eval", "run", "intent", "--config", path))
    store = Store(load_config(path).model.storage)
    cases = {c["id"]: c["attempts"][0] for c in store.evals.load_run(run_id)["cases"]}
    store.close()
    assert cases["big"]["error"].startswith("payload_too_large") and cases["small"]["error"] is None
    assert len(primary.requests) == 1


def test_duplicate_inputs_at_concurrency_16_on_postgres(postgres_url, primary, backup, write_config):  # noqa: F811
    path = write_config(config(primary, backup, top=f"storage: {postgres_url}"))
    same = orjson.dumps({"input": {"text": "the same question"}, "expected": {"category": "billing"}}).decode()
    (path.parent / "cases.jsonl").write_text("\n".join(same.replace("{", f'{{"id": "d{i}", ', 1)
                                                       for i in range(48)) + "\n")
    primary.default = Reply('{"category": "billing"}', delay_s=0.05)  # they all miss the cache together
    run_id = last_line(cli("eval", "run", "intent", "--config", path, "--concurrency", "16"))
    store = Store(postgres_url)
    run = store.evals.load_run(run_id)
    store.close()
    assert len(run["cases"]) == 48
    assert [a["error"] for c in run["cases"] for a in c["attempts"]] == [None] * 48


def test_a_cache_that_cannot_be_written_fails_no_case(setup, primary, caplog, monkeypatch):  # noqa: F811
    from shipyard.store.evals import EvalStore

    def broken(self, key, response):
        raise RuntimeError("disk full")

    monkeypatch.setattr(EvalStore, "cache_put", broken)
    path = setup(n=5, wrong_every=0)

    async def go():
        async with Gateway.from_config(path) as gw:
            runner = Runner(gw, "intent", gw.config.features["intent"].eval.checks)
            run_id = await runner.run(load_cases(path.parent / "cases.jsonl"))
            return await asyncio.to_thread(gw.store.evals.load_run, run_id)

    with caplog.at_level(logging.WARNING, logger="shipyard.eval"):
        run = asyncio.run(go())
    assert [c["attempts"][0]["error"] for c in run["cases"]] == [None] * 5
    assert len([r for r in caplog.records if "disk full" in r.getMessage()]) == 1


def test_the_cache_key_changes_with_a_providers_endpoint_not_with_its_key(setup, primary, backup, write_config):  # noqa: F811
    path = setup(n=5, wrong_every=0)
    cli("eval", "run", "intent", "--config", path)
    assert len(primary.requests) == 5
    moved = path.read_text().replace(f'primary: {{kind: openai, base_url: "{primary.url}"',
                                     f'primary: {{kind: openai, base_url: "{backup.url}"')
    path.write_text(moved)
    backup.default = Reply('{"category": "billing"}')
    cli("eval", "run", "intent", "--config", path)
    assert len(backup.requests) == 5 and len(primary.requests) == 5  # asked the new endpoint, not replayed

    def digest(text: str) -> str:
        return provider_digest(Gateway(load_config(write_config(text, name="other.yaml"))), ["primary"])

    base = config(primary, backup)
    assert digest(base) == digest(base.replace("api_key: none}", "api_key: sk-rotated}", 1))
    assert digest(base) != digest(base.replace(primary.url, backup.url))


def test_judge_answers_are_cached_so_rerunning_checks_costs_nothing(setup, backup):  # noqa: F811
    path = setup(extra=JUDGE, n=5)
    backup.default = Reply('{"score": 0.9, "reason": "fine"}',
                           usage={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100})
    data = path.parent / "cases.jsonl"
    assert "judge cost: $0.0060" in cli("eval", "run", "intent", "--config", path, "--dataset", data).stdout
    assert len(backup.requests) == 5
    again = cli("eval", "run", "intent", "--config", path, "--dataset", data)
    assert len(backup.requests) == 5 and "judge cost" not in again.stdout
    cli("eval", "run", "intent", "--config", path, "--dataset", data, "--no-cache")
    assert len(backup.requests) == 10


def first_third(path) -> str:
    cases = load_cases(path.parent / "cases.jsonl")

    async def go() -> str:  # as if the run had been stopped after 10 cases
        async with Gateway.from_config(path) as gw:
            runner = Runner(gw, "intent", gw.config.features["intent"].eval.checks)
            return await runner.run(cases[:10], dataset=str(path.parent / "cases.jsonl"))

    return asyncio.run(go())


def test_resume_refuses_a_run_whose_checks_changed(setup, primary):  # noqa: F811
    path = setup()
    run_id = first_third(path)
    path.write_text(path.read_text().replace("max_ms: 2000", "max_ms: 3000"))
    refused = cli("eval", "run", "intent", "--config", path, "--resume", run_id, code=2)
    assert "checks of intent changed" in refused.stderr and len(primary.requests) == 10


def test_resume_refuses_a_run_whose_cases_changed_and_takes_new_ones(setup, primary):  # noqa: F811
    path = setup()
    run_id = first_third(path)
    data = path.parent / "cases.jsonl"
    original = data.read_text()
    data.write_text(original.replace('"charge 3"', '"charge three"'))
    refused = cli("eval", "run", "intent", "--config", path, "--resume", run_id, code=2)
    assert "dataset changed" in refused.stderr and "'c3'" in refused.stderr
    data.write_text(original + orjson.dumps({"id": "new", "input": {"text": "x"}}).decode() + "\n")
    resumed = cli("eval", "run", "intent", "--config", path, "--resume", run_id)
    assert last_line(resumed) == run_id and "changed since run" in resumed.stderr  # a warning, not a refusal
    assert len(primary.requests) == 31


def test_compare_says_when_two_runs_have_no_case_in_common(setup, tmp_path):  # noqa: F811
    path = setup(n=12)
    first = last_line(cli("eval", "run", "intent", "--config", path))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(orjson.dumps({"id": f"o{i}", "input": {"text": f"other {i}"}}).decode() + "\n"
                             for i in range(12)))
    second = last_line(cli("eval", "run", "intent", "--config", path, "--dataset", other))
    result = cli("eval", "compare", first, second, "--config", path, "--json", tmp_path / "c.json", code=2)
    assert "no case in common" in result.stderr and "12 case(s) only in the baseline" in result.stderr
    assert not (tmp_path / "c.json").exists()


def test_case_ids_longer_than_the_store_keeps_are_refused_at_their_line(tmp_path):
    data = tmp_path / "long.jsonl"
    data.write_text('{"id": "ok", "input": "a"}\n' + orjson.dumps({"id": "x" * 201, "input": "b"}).decode() + "\n")
    with pytest.raises(DatasetError, match=r"long\.jsonl:2: the id is 201 characters long \(at most 200\)"):
        load_cases(data)
    data.write_text(orjson.dumps({"id": "x" * 200, "input": "b"}).decode() + "\n")
    assert load_cases(data)[0].id == "x" * 200

