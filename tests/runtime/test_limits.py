"""Rate limits, budgets (reservation, settlement, soft mode, downgrade) and the prompt size limit."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from shipyard import Gateway
from shipyard.errors import BudgetExceeded, PayloadTooLarge, RateLimited
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
