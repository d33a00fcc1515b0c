"""Limits and the cache over HTTP, as an OpenAI SDK client sees them."""

from __future__ import annotations

import textwrap

import openai
import pytest

from tests.conftest import two_route_config
from tests.fakes import Reply

MSG = [{"role": "user", "content": "hello"}]


def test_429_rate_limited_carries_retry_after_and_the_limit(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup, feature_extra="limits: {rpm: 1}")))
    client = served.client()
    client.chat.completions.create(model="triage", messages=MSG)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="triage", messages=MSG)
    response = info.value.response
    assert response.status_code == 429 and 1 <= int(response.headers["retry-after"]) <= 61
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and "1 requests per minute" in error["message"]
    assert error["trace_id"] == response.headers["x-shipyard-trace-id"]


def test_429_budget_exceeded_names_the_budget(primary, backup, write_config, serve):
    prices = 'pricing:\n  "primary/gpt-4o-mini": {input: 1000, output: 1000}\n  small-model: {input: 1, output: 1}'
    extra = textwrap.indent(prices, "    ").lstrip()
    served = serve(write_config(two_route_config(primary, backup, extra=extra,
                                                 feature_extra="budget: {usd_per_day: 0.0001}")))
    with pytest.raises(openai.RateLimitError) as info:
        served.client().chat.completions.create(model="triage", messages=MSG)
    error = info.value.response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert "daily budget of feature triage" in error["message"] and "resets at" in error["message"]
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_cache_headers_and_no_cache_from_the_client(primary, backup, write_config, serve):
    primary.script(Reply("one"), Reply("two"))
    served = serve(write_config(two_route_config(primary, backup, feature_extra="cache: {exact: {ttl_s: 60}}")))
    client = served.client()
    first = client.chat.completions.with_raw_response.create(model="triage", messages=MSG)
    assert first.headers["x-shipyard-cache"] == "miss"
    for _ in range(50):  # stored just after the answer left
        second = client.chat.completions.with_raw_response.create(model="triage", messages=MSG)
        if second.headers["x-shipyard-cache"] == "exact":
            break
    assert second.headers["x-shipyard-cache"] == "exact" and second.parse().choices[0].message.content == "one"
    assert second.headers["x-shipyard-cost-usd"] == "0"
    bypass = client.chat.completions.with_raw_response.create(
        model="triage", messages=MSG, extra_headers={"Cache-Control": "no-cache"})
    assert bypass.headers["x-shipyard-cache"] == "bypass" and bypass.parse().choices[0].message.content == "two"


def test_readyz_tells_the_shared_states_health(primary, backup, write_config, serve):
    import httpx

    served = serve(write_config(two_route_config(primary, backup)))
    state = httpx.get(served.base_url + "/readyz").json()["state"]
    assert state == {"backend": "memory", "degraded": False, "errors_total": 0, "on_failure": "fail_open"}


def test_stream_options_that_is_not_an_object_is_a_400(primary, backup, write_config, serve):
    import httpx

    served = serve(write_config(two_route_config(primary, backup)))
    r = httpx.post(served.base_url + "/v1/chat/completions",
                   json={"model": "triage", "messages": MSG, "stream": True, "stream_options": "x"})
    assert r.status_code == 400 and "stream_options" in r.json()["error"]["message"]
