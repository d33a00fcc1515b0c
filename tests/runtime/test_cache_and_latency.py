"""Exact cache, per-route concurrency limits (load shedding) and hedging."""

from __future__ import annotations

import asyncio
import time

import pytest

from shipyard import Gateway
from shipyard.errors import Overloaded
from tests.conftest import OWNERS, two_route_config
from tests.fakes import Fail, Reply, Stream

MSG = [{"role": "user", "content": "What is the refund policy?"}]


@pytest.fixture
def cached(primary, backup, write_config):
    return write_config(two_route_config(primary, backup, feature_extra="cache: {exact: {ttl_s: 60}}"))


async def test_exact_hit_is_served_without_a_provider_and_marked(cached, primary):
    primary.script(Reply("30 days"))
    async with Gateway.from_config(cached) as gw:
        miss = await gw.chat("triage", MSG, temperature=0)
        await gw.services.background.drain()  # the answer is stored after it is returned
        hit = await gw.chat("triage", [{"role": "user", "content": "  What is the refund policy?\n"}], temperature=0)
        assert hit.content == "30 days" and hit.cache == "exact" and hit.route == "cache"
        assert hit.cost_usd == 0 and hit.body["usage"]["total_tokens"] == 0
        assert len(primary.requests) == 1
        trace = await gw.get_trace(hit.trace_id)
        assert trace["cache"] == "exact" and trace["attempt_count"] == 0
        assert (await gw.get_trace(miss.trace_id))["cache"] is None
        # a parameter that changes the answer is another entry
        other = await gw.chat("triage", MSG, temperature=1)
        assert other.cache is None and len(primary.requests) == 2


async def test_the_cache_never_serves_one_tenant_another_tenants_answer(cached, primary):
    primary.script(Reply("acme's answer"), Reply("globex's answer"))
    async with Gateway.from_config(cached) as gw:
        await gw.chat("triage", MSG, tenant="acme")
        await gw.services.background.drain()
        globex = await gw.chat("triage", MSG, tenant="globex")
        assert globex.content == "globex's answer" and globex.cache is None
        await gw.services.background.drain()
        assert (await gw.chat("triage", MSG, tenant="acme")).content == "acme's answer"


async def test_no_cache_skips_the_lookup_and_no_store_skips_both(cached, primary):
    primary.script(Reply("first"), Reply("second"), Reply("third"))
    async with Gateway.from_config(cached) as gw:
        await gw.chat("triage", MSG)
        await gw.services.background.drain()
        fresh = await gw.run(gw.new_call("triage", "chat", {"messages": MSG}, cache_control="no-cache"))
        assert fresh["choices"][0]["message"]["content"] == "second"
        await gw.services.background.drain()
        assert (await gw.chat("triage", MSG)).content == "second"  # the fresh answer replaced the entry
        await gw.run(gw.new_call("triage", "chat", {"messages": MSG}, cache_control="no-store"))
        await gw.services.background.drain()
        assert (await gw.chat("triage", MSG)).content == "second"


async def test_errors_fallbacks_and_refusals_are_never_cached(primary, backup, write_config):
    path = write_config(two_route_config(
        primary, backup,
        feature_extra="cache: {exact: {ttl_s: 60}}\nfallback_response: {content: sorry}",
    ).replace("retries: 2", "retries: 0").replace("retries: 1", "retries: 0"))
    refusal = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "no"},
                            "finish_reason": "content_filter"}]}
    primary.script(Fail(500), Reply(body=refusal), Reply("real answer"))
    backup.script(Fail(500))
    async with Gateway.from_config(path) as gw:
        assert (await gw.chat("triage", MSG)).route == "fallback"
        await gw.services.background.drain()
        assert (await gw.chat("triage", MSG)).content == "no"  # the refusal was not stored either
        await gw.services.background.drain()
        answer = await gw.chat("triage", MSG)
        assert answer.content == "real answer" and answer.cache is None


async def test_a_finished_stream_is_cached_and_a_broken_one_is_not(cached, primary):
    primary.script(Stream(["Hel", "lo"], break_after=1), Stream(["Hel", "lo"]), Reply("unused"))
    async with Gateway.from_config(cached) as gw:
        with pytest.raises(Exception):  # noqa: B017 - the break surfaces as a provider error mid-stream
            async for _ in gw.stream("triage", MSG):
                pass
        await gw.services.background.drain()
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in gw.stream("triage", MSG)
                        if c["choices"]])
        assert text == "Hello"
        await gw.services.background.drain()
        hit = await gw.chat("triage", MSG)
        assert hit.content == "Hello" and hit.cache == "exact"
        stream = gw.stream("triage", MSG)
        again = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
        assert again == "Hello" and stream.call.cache == "exact"
    assert len(primary.requests) == 2


def single_route(upstream, extra: str) -> str:
    return f"""
    providers:
      primary: {{kind: openai, base_url: "{upstream.url}", api_key: none}}
    features:
      triage:
        owners: {OWNERS}
        deadline_s: 5
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 3, retries: 0}}
        {extra}
    """


async def test_a_saturated_route_sheds_load_with_503_overloaded(primary, write_config):
    primary.default = Reply(delay_s=0.3)
    path = write_config(single_route(primary, "concurrency: {max_in_flight: 2, max_queue: 1, queue_timeout_ms: 50}"))
    async with Gateway.from_config(path) as gw:
        t0 = time.monotonic()
        results = await asyncio.gather(*[gw.chat("triage", MSG) for _ in range(6)], return_exceptions=True)
        shed = [r for r in results if isinstance(r, Overloaded)]
        assert len(shed) == 4 and "concurrency limit" in shed[0].message and shed[0].status == 503
        assert time.monotonic() - t0 < 1.0  # the shed calls did not wait for the slow ones
        assert len(primary.requests) == 2


async def test_a_queued_call_gets_the_slot_a_finished_one_frees(primary, write_config):
    primary.default = Reply(delay_s=0.1)
    path = write_config(single_route(primary, "concurrency: {max_in_flight: 1, max_queue: 5, queue_timeout_ms: 1000}"))
    async with Gateway.from_config(path) as gw:
        results = await asyncio.gather(*[gw.chat("triage", MSG) for _ in range(4)])
    assert all(r.content for r in results) and len(primary.requests) == 4


async def test_a_saturated_first_route_overflows_to_the_next(primary, backup, write_config):
    primary.default = Reply("slow primary", delay_s=0.3)
    backup.default = Reply("backup")
    path = write_config(two_route_config(
        primary, backup, feature_extra="concurrency: {max_in_flight: 1, max_queue: 0}"))
    async with Gateway.from_config(path) as gw:
        a, b = await asyncio.gather(gw.chat("triage", MSG), gw.chat("triage", MSG))
    assert sorted([a.content, b.content]) == ["backup", "slow primary"]


async def test_hedging_takes_the_first_answer_and_cancels_the_slow_attempt(primary, backup, write_config):
    primary.default = Reply("slow", delay_s=1.0)
    backup.default = Reply("fast")
    path = write_config(two_route_config(
        primary, backup,
        extra='pricing: {"primary/gpt-4o-mini": {input: 1000, output: 1000}, "backup/small-model": {input: 0, output: 0}}',
        feature_extra="hedge: {after_ms: 100}",
    ))
    async with Gateway.from_config(path) as gw:
        t0 = time.monotonic()
        reply = await gw.chat("triage", MSG)
        elapsed = time.monotonic() - t0
        trace = await gw.get_trace(reply.trace_id)
    assert reply.content == "fast" and reply.route == "backup/small-model"
    assert 0.1 <= elapsed < 0.8
    outcomes = sorted(a["outcome"] for a in trace["attempts"])
    assert outcomes == ["cancelled", "ok"]
    kinds = [e["kind"] for e in trace["events"]]
    assert "hedge" in kinds and "hedge_cancelled" in kinds
    # both attempts are in the cost: the cancelled one's prompt, estimated, at primary's price
    assert reply.cost_usd > 0 and trace["cost_estimated"] is True


async def test_no_hedge_when_the_first_route_answers_in_time(primary, backup, write_config):
    primary.default = Reply("quick")
    path = write_config(two_route_config(primary, backup, feature_extra="hedge: {after_ms: 500}"))
    async with Gateway.from_config(path) as gw:
        reply = await gw.chat("triage", MSG)
    assert reply.content == "quick" and not backup.requests


async def test_a_hedge_whose_first_attempt_fails_waits_for_the_second(primary, backup, write_config):
    backup.default = Reply("backup answer", delay_s=0.2)
    path = write_config(two_route_config(primary, backup, feature_extra="hedge: {after_ms: 1}"))
    primary.script(Fail(500, delay_s=0.05), Reply("retry"))
    async with Gateway.from_config(path) as gw:
        reply = await gw.chat("triage", MSG)
    assert reply.content == "backup answer" and len(primary.requests) == 1


async def test_a_typed_feature_caches_its_validated_output(primary, write_config):
    path = write_config(single_route(primary, """cache: {exact: {ttl_s: 60}}
        input_schema: {type: object, required: [text], properties: {text: {type: string}}}
        output_schema: {type: object, required: [category], properties: {category: {enum: [billing, other]}}}"""))
    primary.script(Reply('{"category": "billing"}'), Reply('{"category": "other"}'))
    async with Gateway.from_config(path) as gw:
        first = await gw.invoke("triage", {"text": "charged twice"})
        await gw.services.background.drain()
        again = await gw.invoke("triage", {"text": "charged twice"})
        other = await gw.invoke("triage", {"text": "something else"})
    assert first.output == again.output == {"category": "billing"} and again.cache == "exact"
    assert other.output == {"category": "other"} and other.cache is None


async def test_hedging_at_a_percentile_follows_the_routes_own_latency(primary, backup, write_config):
    primary.default = Reply("primary", delay_s=0.01)
    backup.default = Reply("backup")
    path = write_config(two_route_config(primary, backup, feature_extra="hedge: {percentile: 95, min_ms: 5}"))
    async with Gateway.from_config(path) as gw:
        for _ in range(19):  # before 20 answers there is no percentile and no after_ms: no hedge
            assert (await gw.chat("triage", MSG)).content == "primary"
        assert not backup.requests
        feature = gw.feature("triage")
        await gw.chat("triage", MSG)
        delay = feature.hedge_delay_s(0)
        assert delay is not None and 0.005 <= delay < 0.2  # ~ the primary's p95 of ~10 ms answers
        primary.default = Reply("slow primary", delay_s=1.0)
        reply = await gw.chat("triage", MSG)
    assert reply.content == "backup" and len(backup.requests) == 1


async def test_a_call_cancelled_while_hedging_leaves_no_attempt_running(primary, backup, write_config):
    primary.default = Reply("slow", delay_s=1.0)
    backup.default = Reply("slow too", delay_s=1.0)
    path = write_config(two_route_config(
        primary, backup, feature_extra="hedge: {after_ms: 100}\nconcurrency: {max_in_flight: 1}"))
    async with Gateway.from_config(path) as gw:
        gates = gw.feature("triage").gates
        for wait in (0.05, 0.3):  # cancelled before the hedge starts, then after
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(gw.chat("triage", MSG), wait)
            assert [g.in_flight for g in gates] == [0, 0]  # every slot given back, nothing left running
        primary.default = Reply("quick")
        assert (await gw.chat("triage", MSG)).content == "quick"  # the route is not shed for good


async def test_a_hedged_stream_gives_the_losers_slot_back(primary, backup, write_config):
    primary.default = Stream(["slow"], first_delay_s=0.5)
    backup.default = Stream(["fast"])
    path = write_config(two_route_config(
        primary, backup, feature_extra="hedge: {after_ms: 50}\nconcurrency: {max_in_flight: 1}"))
    async with Gateway.from_config(path) as gw:
        stream = gw.stream("triage", MSG)
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
        assert text == "fast" and stream.route == "backup/small-model"
        assert [g.in_flight for g in gw.feature("triage").gates] == [0, 0]


def inprocess_hedge(write_config, first: str, second: str) -> object:
    return write_config(f"""
    providers:
      local: {{kind: python, target: "tests.runtime.inprocess_models:{first}"}}
      other: {{kind: python, target: "tests.runtime.inprocess_models:{second}"}}
    features:
      triage:
        owners: {OWNERS}
        route:
          - {{provider: local, model: a, timeout_s: 3, retries: 0}}
          - {{provider: other, model: b, timeout_s: 3, retries: 0}}
        hedge: {{after_ms: 20}}
        concurrency: {{max_in_flight: 1}}
    """)


async def test_the_callers_cancellation_is_never_swallowed_while_a_loser_cleans_up(write_config):
    # The backup wins at ~70 ms; the primary, cancelled, takes 0.3 s to clean up; the caller gives up at
    # 0.15 s, in the middle of that clean-up: it must get its TimeoutError, and every slot comes back.
    async with Gateway.from_config(inprocess_hedge(write_config, "slow_to_cancel", "quick")) as gw:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(gw.chat("triage", MSG), 0.15)
        assert time.monotonic() - t0 < 0.3
        await asyncio.sleep(0.4)
        assert [g.in_flight for g in gw.feature("triage").gates] == [0, 0]
        reply = await gw.chat("triage", MSG)
        assert reply.content == "quick" and reply.route == "other/b"


async def test_a_hedged_stream_without_usage_is_charged_for_its_winner(primary, backup, write_config):
    primary.default = Stream(["slow"], first_delay_s=0.5, include_usage=False)
    backup.default = Stream(["x" * 400], include_usage=False)
    path = write_config(two_route_config(
        primary, backup, extra='pricing: {"gpt-4o-mini": {input: 1000, output: 1000}, "small-model": {input: 1000, output: 1000}}',
        feature_extra="hedge: {after_ms: 50}"))
    async with Gateway.from_config(path) as gw:
        stream = gw.stream("triage", MSG)
        async for _ in stream:
            pass
        trace = await gw.get_trace(stream.trace_id)
    assert trace["completion_tokens"] >= 100  # the winner's 400 characters, estimated
    assert trace["cost_estimated"] is True
