"""The behaviour every State must have, run against MemoryState and RedisState alike (see conftest)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from shipyard.state import BreakerLike, BreakerState, Bucket, Budget, BudgetDecision, RateDecision
from tests.state.conftest import Harness

SLOW = 0.001  # tokens per second: no refill worth speaking of during a test

# ------------------------------------------------------------------------------------------ rate limits


async def test_take_until_empty_then_deny_with_retry_after(harness: Harness) -> None:
    b = Bucket("rl:key:k1:rpm", capacity=5, per_s=1.0, cost=1)
    decisions = [await harness.state.take([b]) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[0] == RateDecision(True, 0.0, ())
    last = decisions[-1]
    assert last.denied == ("rl:key:k1:rpm",) and not last.degraded
    assert last.retry_after_s is not None
    assert 1.0 - harness.tol <= last.retry_after_s <= 1.0  # one token at 1/s, less what refilled meanwhile


async def test_bucket_refills_at_its_rate(harness: Harness) -> None:
    b = Bucket("rl:refill", capacity=2, per_s=10.0, cost=1)
    assert [(await harness.state.take([b])).allowed for _ in range(3)] == [True, True, False]
    await harness.advance(0.15)  # 1.5 tokens
    assert [(await harness.state.take([b])).allowed for _ in range(2)] == [True, False]
    await harness.advance(1.0)  # back to full (capped at 2), not 10
    assert [(await harness.state.take([b])).allowed for _ in range(3)] == [True, True, False]


async def test_take_is_all_or_nothing_over_several_buckets(harness: Harness) -> None:
    tight = Bucket("rl:tight", capacity=1, per_s=SLOW, cost=1)
    roomy = Bucket("rl:roomy", capacity=5, per_s=SLOW, cost=1)
    assert (await harness.state.take([tight, roomy])).allowed
    refused = await harness.state.take([tight, roomy])
    assert not refused.allowed and refused.denied == ("rl:tight",)
    # The refusal took nothing from the roomy bucket: it still holds 4.
    assert [(await harness.state.take([roomy])).allowed for _ in range(5)] == [True] * 4 + [False]


async def test_retry_after_waits_for_every_denied_bucket(harness: Harness) -> None:
    fast = Bucket("rl:fast", capacity=1, per_s=1.0, cost=1)
    slow = Bucket("rl:slow", capacity=1, per_s=0.5, cost=1)
    assert (await harness.state.take([fast, slow])).allowed
    d = await harness.state.take([fast, slow])
    assert set(d.denied) == {"rl:fast", "rl:slow"}
    assert d.retry_after_s is not None and 2.0 - harness.tol <= d.retry_after_s <= 2.0


async def test_cost_above_capacity_never_fits_and_takes_nothing(harness: Harness) -> None:
    ok = Bucket("rl:ok", capacity=10, per_s=SLOW, cost=1)
    tokens = Bucket("rl:tpm", capacity=100, per_s=SLOW, cost=101)
    d = await harness.state.take([ok, tokens])
    assert d == RateDecision(False, None, ("rl:tpm",))
    assert [(await harness.state.take([ok])).allowed for _ in range(11)] == [True] * 10 + [False]


async def test_charge_goes_into_debt_and_refunds_up_to_capacity(harness: Harness) -> None:
    b = Bucket("rl:tokens", capacity=10, per_s=1.0, cost=1)
    await harness.state.charge([Bucket("rl:tokens", 10, 1.0, 15)])  # used more than it had: level -5
    d = await harness.state.take([b])
    assert not d.allowed and d.retry_after_s is not None
    assert 6.0 - harness.tol <= d.retry_after_s <= 6.0
    await harness.state.charge([Bucket("rl:tokens", 10, 1.0, -100)])  # a refund, capped at capacity
    assert [(await harness.state.take([b])).allowed for _ in range(11)] == [True] * 10 + [False]


async def test_concurrent_takes_never_exceed_capacity(harness: Harness) -> None:
    b = Bucket("rl:burst", capacity=50, per_s=SLOW, cost=1)
    decisions = await asyncio.gather(*(harness.state.take([b]) for _ in range(300)))
    assert sum(d.allowed for d in decisions) == 50


# ------------------------------------------------------------------------------------------ budgets


def budgets(limit: int = 100) -> list[Budget]:
    return [Budget("budget:feature:f:day:d", limit, hard=True, ttl_s=3600),
            Budget("budget:tenant:t:day:d", limit // 2, hard=False, ttl_s=3600)]


async def test_reserve_then_settle(harness: Harness) -> None:
    bs = budgets()
    assert await harness.state.reserve(bs, 40) == BudgetDecision(True, None, (0, 0))
    assert await harness.state.spent(bs) == [(0, 40), (0, 40)]
    await harness.state.settle(bs, reserved=40, actual=25)
    assert await harness.state.spent(bs) == [(25, 0), (25, 0)]
    assert (await harness.state.reserve(bs, 10)).spent == (25, 25)


async def test_hard_budget_refuses_and_changes_nothing(harness: Harness) -> None:
    bs = budgets(100)
    assert (await harness.state.reserve(bs, 60)).allowed
    d = await harness.state.reserve(bs, 41)  # 60 + 41 > 100
    assert d == BudgetDecision(False, "budget:feature:f:day:d", (60, 60))
    assert await harness.state.spent(bs) == [(0, 60), (0, 60)]
    assert (await harness.state.reserve(bs, 40)).allowed  # exactly at the limit is allowed


async def test_soft_budget_always_allows(harness: Harness) -> None:
    soft = [Budget("budget:soft", 10, hard=False, ttl_s=60)]
    for _ in range(3):
        assert (await harness.state.reserve(soft, 8)).allowed
    assert await harness.state.spent(soft) == [(0, 24)]


async def test_settle_never_releases_below_zero(harness: Harness) -> None:
    b = [Budget("budget:x", 1000, hard=True, ttl_s=60)]
    await harness.state.reserve(b, 5)
    await harness.state.settle(b, reserved=50, actual=7)
    assert await harness.state.spent(b) == [(7, 0)]


async def test_unknown_budget_reads_zero(harness: Harness) -> None:
    assert await harness.state.spent([Budget("budget:none", 1, True, 60)]) == [(0, 0)]


async def test_concurrent_reservations_never_pass_a_hard_limit(harness: Harness) -> None:
    b = [Budget("budget:race", 300, hard=True, ttl_s=60)]
    decisions = await asyncio.gather(*(harness.state.reserve(b, 7) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 42  # 42 * 7 = 294 <= 300 < 301
    assert await harness.state.spent(b) == [(0, 294)]


async def test_large_amounts_stay_exact(harness: Harness) -> None:
    b = [Budget("budget:big", 5 * 10**15, hard=True, ttl_s=60)]  # 5 million USD in nano-USD
    assert (await harness.state.reserve(b, 10**15 + 1)).allowed
    await harness.state.settle(b, reserved=10**15 + 1, actual=10**15 + 3)
    assert await harness.state.spent(b) == [(10**15 + 3, 0)]


# ------------------------------------------------------------------------------------------ exact cache


async def test_cache_round_trip_and_expiry(harness: Harness) -> None:
    assert await harness.state.cache_get("cache:missing") is None
    await harness.state.cache_set("cache:a", b"\x00answer", ttl_s=0.1)
    await harness.state.cache_set("cache:b", b"kept", ttl_s=60)
    assert await harness.state.cache_get("cache:a") == b"\x00answer"
    await harness.advance(0.15)
    assert await harness.state.cache_get("cache:a") is None
    assert await harness.state.cache_get("cache:b") == b"kept"


# ------------------------------------------------------------------------------------------ vectors


def vec(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


async def test_vectors_above_threshold_best_first(harness: Harness) -> None:
    s = harness.state
    await s.vectors_add("t1:f", "same", vec(1, 0, 0), ttl_s=60)
    await s.vectors_add("t1:f", "close", vec(0.9, 0.1, 0), ttl_s=60)
    await s.vectors_add("t1:f", "far", vec(0, 1, 0), ttl_s=60)
    await s.vectors_add("t2:f", "other-tenant", vec(1, 0, 0), ttl_s=60)
    hits = await s.vectors_search("t1:f", vec(2, 0, 0), threshold=0.9)  # not unit: normalized
    assert [e for e, _ in hits] == ["same", "close"]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-6) and hits[1][1] == pytest.approx(0.9939, abs=1e-3)
    assert await s.vectors_search("t1:f", vec(1, 0, 0), threshold=0.9, limit=1) == [hits[0]]
    assert await s.vectors_search("t3:f", vec(1, 0, 0), threshold=0.0) == []


async def test_vectors_expire_and_an_entry_added_again_replaces_itself(harness: Harness) -> None:
    s = harness.state
    await s.vectors_add("ns", "short", vec(1, 0), ttl_s=0.1)
    await s.vectors_add("ns", "long", vec(0.8, 0.6), ttl_s=60)
    await s.vectors_add("ns", "moved", vec(1, 0), ttl_s=60)
    await s.vectors_add("ns", "moved", vec(0, 1), ttl_s=60)
    assert [e for e, _ in await s.vectors_search("ns", vec(1, 0), 0.5)] == ["short", "long"]
    await harness.advance(0.15)
    assert [e for e, _ in await s.vectors_search("ns", vec(1, 0), 0.5)] == ["long"]
    assert [e for e, _ in await s.vectors_search("ns", vec(0, 1), 0.99)] == ["moved"]


# ------------------------------------------------------------------------------------------ breakers


async def open_it(harness: Harness, key: str, cooldown_s: float) -> BreakerLike:
    breaker = harness.state.breaker(key, min_calls=4, failure_ratio=0.5, window_s=10, cooldown_s=cooldown_s)
    for ok in (True, False, True, False):
        ticket = await breaker.admit()
        assert ticket is not None
        breaker.record(ok, ticket)
        await harness.settle_background()
    return breaker


async def test_breaker_opens_on_failures_and_half_opens_after_cooldown(harness: Harness) -> None:
    breaker = await open_it(harness, "openai/gpt", cooldown_s=0.1)
    assert breaker.state is BreakerState.OPEN
    assert await breaker.admit() is None
    await harness.advance(0.12)
    assert breaker.state is BreakerState.HALF_OPEN
    probe = await breaker.admit()
    assert probe is not None
    assert await breaker.admit() is None  # one probe slot only
    breaker.record(True, probe)
    await harness.settle_background()
    assert breaker.state is BreakerState.CLOSED
    assert await breaker.admit() is not None


async def test_breaker_failed_probe_reopens(harness: Harness) -> None:
    breaker = await open_it(harness, "p/reopen", cooldown_s=0.1)
    await harness.advance(0.12)
    probe = await breaker.admit()
    breaker.record(False, probe)
    await harness.settle_background()
    assert breaker.state is BreakerState.OPEN
    assert await breaker.admit() is None


async def test_breaker_released_probe_frees_its_slot(harness: Harness) -> None:
    breaker = await open_it(harness, "p/release", cooldown_s=0.1)
    await harness.advance(0.12)
    probe = await breaker.admit()
    assert probe is not None and await breaker.admit() is None
    breaker.release(probe)
    await harness.settle_background()
    assert await breaker.admit() is not None


async def test_breaker_straggler_ticket_cannot_close_or_reopen(harness: Harness) -> None:
    breaker = harness.state.breaker("p/straggler", min_calls=2, window_s=10, cooldown_s=0.1)
    straggler = await breaker.admit()  # admitted while closed, answers much later
    for _ in range(2):
        breaker.record(False, await breaker.admit())
        await harness.settle_background()
    assert breaker.state is BreakerState.OPEN
    await harness.advance(0.12)
    probe = await breaker.admit()
    assert probe is not None and probe != straggler
    breaker.record(True, straggler)  # must not close it
    await harness.settle_background()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(False, straggler)  # must not re-open it either
    await harness.settle_background()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(True, probe)
    await harness.settle_background()
    assert breaker.state is BreakerState.CLOSED


async def test_breaker_is_one_object_per_key_and_checks_its_parameters(harness: Harness) -> None:
    a = harness.state.breaker("p/m", cooldown_s=5)
    assert harness.state.breaker("p/m", cooldown_s=5) is a
    assert harness.state.breaker("p/other", cooldown_s=5) is not a
    with pytest.raises(ValueError, match="other parameters"):
        harness.state.breaker("p/m", cooldown_s=6)
    with pytest.raises(ValueError, match="failure_ratio"):
        harness.state.breaker("p/bad", failure_ratio=0)


async def test_a_healthy_state_is_not_degraded(harness: Harness) -> None:
    assert await harness.state.ping()
    assert not harness.state.degraded
    assert not (await harness.state.take([Bucket("rl:h", 1, 1, 1)])).degraded


# -- admit / finish: the limit stage's two steps ----------------------------------------------------------


async def test_admit_takes_and_reserves_together_or_not_at_all(harness: Harness) -> None:
    s = harness.state
    rpm = Bucket("rl:admit", 3, 0.001, 1)
    day = [Budget("budget:admit", 100, True, 3600)]
    rate, budget = await s.admit([rpm], day, 60)
    assert rate.allowed and budget.allowed and budget.spent == (0,)
    # the budget refuses the next one: the request is not taken from the bucket either
    rate, budget = await s.admit([rpm], day, 60)
    assert rate.allowed and not budget.allowed and budget.denied == "budget:admit" and budget.spent == (60,)
    assert (await s.spent(day)) == [(0, 60)]
    # 60 + 30 and then + 5 fit the budget of 100; the bucket held 3 requests: the third is the last
    assert (await s.admit([rpm], day, 30))[1].allowed
    assert (await s.admit([rpm], day, 5))[0].allowed
    rate, budget = await s.admit([rpm], day, 1)
    assert not rate.allowed and rate.denied == ("rl:admit",) and rate.retry_after_s > 0
    assert (await s.spent(day)) == [(0, 95)]  # a call the rate limit refused reserved nothing


async def test_finish_charges_the_tokens_and_settles_the_cost(harness: Harness) -> None:
    s = harness.state
    tpm = Bucket("rl:finish", 100, 0.001, 40)
    day = [Budget("budget:finish", 1000, True, 3600)]
    assert (await s.admit([tpm], day, 500))[1].allowed
    await s.finish([Bucket("rl:finish", 100, 0.001, 30)], day, 500, 120)  # 70 tokens used, not 40
    assert (await s.spent(day)) == [(120, 0)]
    rate, _ = await s.admit([Bucket("rl:finish", 100, 0.001, 31)], day, 1)
    assert not rate.allowed  # 100 - 40 - 30 = 30 tokens left
    assert (await s.admit([Bucket("rl:finish", 100, 0.001, 30)], day, 1))[0].allowed
