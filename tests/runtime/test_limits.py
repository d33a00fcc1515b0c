"""Rate limits, budgets (reservation, settlement, soft mode, downgrade) and the prompt size limit."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from shipyard import Gateway
from shipyard.errors import BudgetExceeded, OutputContractError, PayloadTooLarge, RateLimited
from tests.conftest import two_route_config
from tests.fakes import Reply

MSG = [{"role": "user", "content": "hi there"}]
PRICING = """
pricing:
  primary/gpt-4o-mini: {input: 1000, output: 1000}
  backup/small-model: {input: 100, output: 100}
"""


def config(primary, backup, write_config, feature_extra: str, extra: str = PRICING):
    extra = textwrap.indent(extra.strip(), "    ").lstrip()  # two_route_config indents its first line only
    return write_config(two_route_config(primary, backup, extra=extra, feature_extra=feature_extra))


async def test_rpm_is_exact_under_concurrency_and_says_when_to_retry(primary, backup, write_config):
    path = config(primary, backup, write_config, "limits: {rpm: 5}")
    async with Gateway.from_config(path) as gw:
        results = await asyncio.gather(*[gw.chat("triage", MSG) for _ in range(12)], return_exceptions=True)
        refused = [r for r in results if isinstance(r, RateLimited)]
        assert len(refused) == 7 and sum(not isinstance(r, Exception) for r in results) == 5
        err = refused[0]
        assert "feature triage allows 5 requests per minute" in err.message
        assert 0 < err.retry_after <= 12.5  # one request refills in 60/5 = 12 s
        assert len(primary.requests) == 5  # refused calls never reach a provider


async def test_tpm_counts_the_prompt_before_and_the_real_tokens_after(primary, backup, write_config):
    # The fake reports 8 tokens per call; the prompt estimate of MSG is ~9. 30 tokens/min: 3 calls fit.
    path = config(primary, backup, write_config, "limits: {tpm: 30}")
    async with Gateway.from_config(path) as gw:
        for _ in range(3):
            await gw.chat("triage", MSG)
        await gw.services.background.drain()
        with pytest.raises(RateLimited, match="tokens per minute"):
            await gw.chat("triage", MSG)


async def test_a_prompt_longer_than_the_token_limit_is_413(primary, backup, write_config):
    path = config(primary, backup, write_config, "max_input_tokens: 50")
    async with Gateway.from_config(path) as gw:
        with pytest.raises(PayloadTooLarge, match="max_input_tokens"):
            await gw.chat("triage", [{"role": "user", "content": "word " * 200}])
        assert (await gw.chat("triage", MSG)).content
    assert not any("word word" in str(r.body) for r in primary.requests)


async def test_hard_budget_refuses_with_which_budget_and_when_it_resets(primary, backup, write_config):
    # 8 tokens at $1000/M = $0.008 per call; reservation: ~9 prompt + 1024 output tokens = ~$1.03.
    path = config(primary, backup, write_config, "budget: {usd_per_day: 1.5, mode: hard}")
    async with Gateway.from_config(path) as gw:
        first = await gw.chat("triage", MSG)
        assert first.cost_usd == pytest.approx(0.008)
        await gw.services.background.drain()  # settlement runs after the answer is returned
        await gw.chat("triage", MSG)
        await gw.services.background.drain()
        # spent 0.016; a third reservation of ~1.03 still fits in 1.5, a fourth in parallel does not
        results = await asyncio.gather(*[gw.chat("triage", MSG) for _ in range(3)], return_exceptions=True)
        refused = [r for r in results if isinstance(r, BudgetExceeded)]
        assert len(refused) == 2
        message = refused[0].message
        assert "daily budget of feature triage ($1.50)" in message and "resets at" in message and "UTC" in message
        assert refused[0].retry_after > 0
        await gw.services.background.drain()
        spent = await gw.state.spent([_feature_budget_for(1.5)])
        assert spent[0] == (24_000_000, 0)  # 3 calls x $0.008, nothing left reserved


async def test_max_tokens_sets_the_reservation(primary, backup, write_config):
    # With max_tokens 10 a call reserves ~19 tokens = ~$0.019: a $0.05 budget admits two at once.
    path = config(primary, backup, write_config, "budget: {usd_per_day: 0.05}")
    async with Gateway.from_config(path) as gw:
        results = await asyncio.gather(*[gw.chat("triage", MSG, max_tokens=10) for _ in range(4)],
                                       return_exceptions=True)
        assert sum(isinstance(r, BudgetExceeded) for r in results) == 2


async def test_concurrent_calls_never_overspend_a_hard_budget(primary, backup, write_config):
    primary.default = Reply(delay_s=0.02)
    path = config(primary, backup, write_config, "budget: {usd_per_day: 0.1}")
    async with Gateway.from_config(path) as gw:
        for _ in range(3):
            await asyncio.gather(*[gw.chat("triage", MSG, max_tokens=5) for _ in range(20)], return_exceptions=True)
        await gw.services.background.drain()
        (spent, reserved), = await gw.state.spent([_feature_budget_for(0.1)])
    assert reserved == 0
    assert spent <= 100_000_000  # never above the limit: each call reserved its worst case first


def _feature_budget_for(usd: float):
    import time

    from shipyard.economics.quotas import BudgetRule

    return BudgetRule("feature", "triage", "day", usd, True).budget(time.time())


async def test_soft_budget_serves_and_raises_an_event(primary, backup, write_config, caplog):
    path = config(primary, backup, write_config, "budget: {usd_per_day: 0.5, mode: soft}")
    async with Gateway.from_config(path) as gw:
        replies = [await gw.chat("triage", MSG) for _ in range(3)]
        trace = await gw.get_trace(replies[-1].trace_id)
    assert all(r.content for r in replies)
    assert any(e["kind"] == "budget_soft_exceeded" for e in trace["events"])
    assert "soft budget exceeded" in caplog.text


async def test_downgrade_moves_to_the_cheaper_route_once_a_share_is_spent(primary, backup, write_config):
    # The share counts what is spent, reserved, and this call's own reservation. $20 * 0.06 = $1.20:
    # the first call's ~$1.03 (1024 output tokens) stays under it, the second's ~$1.51 does not.
    path = config(primary, backup, write_config, "budget: {usd_per_day: 20, downgrade_at: 0.06}")
    async with Gateway.from_config(path) as gw:
        first = await gw.chat("triage", MSG)
        assert first.route == "primary/gpt-4o-mini"
        second = await gw.chat("triage", MSG, max_tokens=1500)
        trace = await gw.get_trace(second.trace_id)
    assert second.route == "backup/small-model"
    assert any(e["kind"] == "downgraded" and e["route"] == "backup/small-model" for e in trace["events"])


async def test_tenant_and_key_limits_apply_with_the_feature_ones(primary, backup, write_config):
    extra = PRICING + "tenants:\n  acme: {limits: {rpm: 2}}\n"
    path = config(primary, backup, write_config, "limits: {rpm: 100}", extra=extra)
    async with Gateway.from_config(path) as gw:
        await gw.chat("triage", MSG, tenant="acme")
        await gw.chat("triage", MSG, tenant="acme")
        with pytest.raises(RateLimited, match="tenant acme allows 2 requests per minute"):
            await gw.chat("triage", MSG, tenant="acme")
        assert (await gw.chat("triage", MSG, tenant="globex")).content  # another tenant is not limited


async def test_a_zero_budget_refuses_everything_clearly(primary, backup, write_config):
    path = config(primary, backup, write_config, "budget: {usd_per_month: 0}")
    async with Gateway.from_config(path) as gw:
        with pytest.raises(BudgetExceeded, match=r"monthly budget of feature triage \(\$0.00\)"):
            await gw.chat("triage", MSG)
    assert not primary.requests


INVOKE = """
input_schema: {type: object, required: [text], properties: {text: {type: string}}}
output_schema: {type: object, required: [category], properties: {category: {type: string}}}"""


async def test_a_repair_re_ask_must_fit_the_budget_too(primary, backup, write_config):
    # One attempt reserves ~(prompt + 1024) tokens at $1000/M: about $1.04. A budget of $1.5 covers
    # one attempt, not the repair's second one nor a failover: no second paid attempt is made, and the
    # bad answer ends as an output-contract failure (which a fallback_response would answer).
    path = config(primary, backup, write_config, "budget: {usd_per_day: 1.5}" + INVOKE)
    primary.script(Reply("not json"), Reply('{"category": "billing"}'))
    async with Gateway.from_config(path) as gw:
        with pytest.raises(OutputContractError, match="the budget does not cover another route") as info:
            await gw.invoke("triage", {"text": "charged twice"})
        await gw.services.background.drain()
        (spent, reserved), = await gw.state.spent([_feature_budget_for(1.5)])
    assert reserved == 0 and spent == 8_000_000 and len(primary.requests) == 1  # the first answer only
    assert not backup.requests and isinstance(info.value.__cause__, BudgetExceeded)


async def test_a_repair_within_the_budget_is_served_and_both_answers_counted(primary, backup, write_config):
    path = config(primary, backup, write_config, "budget: {usd_per_day: 5}" + INVOKE)
    primary.script(Reply("not json"), Reply('{"category": "billing"}'))
    async with Gateway.from_config(path) as gw:
        result = await gw.invoke("triage", {"text": "charged twice"})
        await gw.services.background.drain()
        (spent, reserved), = await gw.state.spent([_feature_budget_for(5)])
    assert result.output == {"category": "billing"} and result.cost_usd == pytest.approx(0.016)
    assert (spent, reserved) == (16_000_000, 0)


async def test_a_budgeted_request_without_a_cap_is_sent_with_the_reserved_cap(primary, backup, write_config):
    path = config(primary, backup, write_config, "budget: {usd_per_day: 5}\nmax_output_tokens: 300")
    async with Gateway.from_config(path) as gw:
        await gw.chat("triage", MSG)
        await gw.chat("triage", MSG, max_completion_tokens=50)
    assert primary.requests[0].body["max_tokens"] == 300
    assert "max_tokens" not in primary.requests[1].body and primary.requests[1].body["max_completion_tokens"] == 50


async def test_absurd_values_are_clean_errors_not_500s(primary, backup, write_config):
    path = config(primary, backup, write_config, "budget: {usd_per_day: 5, mode: soft}")
    async with Gateway.from_config(path) as gw:
        assert (await gw.chat("triage", MSG, max_tokens=2**63 - 1)).content  # the reservation is capped
        bad = [{"role": "user", "content": "x", "tool_calls": 5}]
        assert (await gw.chat("triage", bad)).content  # estimated, not crashed; the provider judges it


def test_a_budget_or_price_that_is_not_a_finite_number_is_a_config_error(primary, backup, write_config):
    from shipyard.errors import ConfigError

    for text in ("budget: {usd_per_day: .inf}", "budget: {usd_per_day: .nan}"):
        with pytest.raises(ConfigError, match="budget.usd_per_day"):
            Gateway.from_config(config(primary, backup, write_config, text))


def test_a_key_budget_must_be_finite(tmp_path):
    from shipyard.access import KeyRing
    from shipyard.store import Store

    store = Store(f"sqlite:///{tmp_path}/k.db")
    store.migrate()
    with pytest.raises(ValueError, match="usd_per_day must be a number of USD"):
        KeyRing(store).create("acme", usd_per_day=float("inf"))
    assert store.list_keys() == []
    store.close()


async def test_an_answer_without_usage_gets_an_estimated_cost(primary, backup, write_config):
    path = config(primary, backup, write_config, "")
    primary.script(Reply("a twelve character answer", usage=None))
    async with Gateway.from_config(path) as gw:
        reply = await gw.chat("triage", MSG)
        trace = await gw.get_trace(reply.trace_id)
    assert reply.cost_usd > 0 and trace["cost_estimated"] is True and trace["completion_tokens"] > 0
