"""Retries, backoff, Retry-After, timeouts, failover, circuit breakers, deadlines, fallbacks: end to end."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import two_route_config
from tests.fakes import Fail, Hang, Reply

MSG = [{"role": "user", "content": "hello"}]


def chat(served, **kw):
    return served.client(**kw).chat.completions.with_raw_response.create(model="triage", messages=MSG)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(primary, backup, write_config, serve, status):
    served = serve(write_config(two_route_config(primary, backup)))
    primary.script(Fail(status), Reply("second time lucky"))
    raw = chat(served)
    assert raw.parse().choices[0].message.content == "second time lucky"
    assert raw.headers["x-shipyard-attempts"] == "2" and backup.requests == []


@pytest.mark.parametrize("status", [401, 403, 404])
def test_route_faults_fail_over_without_retry(primary, backup, write_config, serve, status):
    served = serve(write_config(two_route_config(primary, backup)))
    primary.script(Fail(status, "bad key or model"))
    raw = chat(served)
    assert raw.headers["x-shipyard-route"] == "backup/small-model"
    assert len(primary.requests) == 1


@pytest.mark.parametrize("status", [400, 413, 422])
def test_caller_faults_are_never_retried_or_failed_over(primary, backup, write_config, serve, status):
    served = serve(write_config(two_route_config(primary, backup)))
    primary.script(Fail(status, "your request is wrong"))
    with pytest.raises(openai.APIStatusError) as info:
        chat(served)
    assert info.value.status_code == 400
    assert "your request is wrong" in info.value.message
    assert len(primary.requests) == 1 and backup.requests == []


def test_retry_after_is_honoured(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup)))
    primary.script(Fail(429, "slow down", headers={"Retry-After": "0.6"}), Reply("ok"))
    chat(served)
    first, second = primary.requests
    assert second.at - first.at >= 0.6


def test_retry_after_longer_than_allowed_moves_to_the_next_route(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup)))
    primary.script(Fail(429, "come back in an hour", headers={"Retry-After": "3600"}))
    started = time.monotonic()
    raw = chat(served)
    assert time.monotonic() - started < 2
    assert raw.headers["x-shipyard-route"] == "backup/small-model" and len(primary.requests) == 1


def test_a_hanging_provider_times_out_and_fails_over(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup)))
    primary.default = Hang(30)
    started = time.monotonic()
    raw = chat(served)
    elapsed = time.monotonic() - started
    assert raw.headers["x-shipyard-route"] == "backup/small-model"
    assert raw.headers["x-shipyard-attempts"] == "4"  # three timeouts of 1 s, then the backup
    assert 3 <= elapsed < 4.5


def test_the_deadline_bounds_the_whole_call(primary, backup, write_config, serve):
    config = two_route_config(primary, backup).replace("deadline_s: 5", "deadline_s: 1.5")
    served = serve(write_config(config))
    primary.default = Hang(30)
    backup.default = Hang(30)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        chat(served)
    assert time.monotonic() - started < 2.5
    assert info.value.status_code == 504 and info.value.body["code"] == "deadline_exceeded"
    assert "deadline of 1.5s" in info.value.message


def test_fallback_response_when_every_route_fails(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup, feature_extra="""
        fallback_response: {content: "A person will follow up."}
    """)))
    primary.default = Fail(500)
    backup.default = Fail(500)
    raw = chat(served)
    assert raw.parse().choices[0].message.content == "A person will follow up."
    assert raw.headers["x-shipyard-route"] == "fallback"
    stream = served.client().chat.completions.create(model="triage", messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "A person will follow up."
    trace = httpx.get(f"{served.base_url}/v1/traces/{raw.headers['x-shipyard-trace-id']}").json()
    assert trace["status"] == "fallback" and trace["route"] == "fallback"
    assert any(e["kind"] == "fallback" for e in trace["events"])


def test_circuit_breaker_opens_skips_and_recovers(primary, backup, write_config, serve):
    served = serve(write_config(two_route_config(primary, backup, feature_extra="""
        circuit_breaker: {failure_ratio: 0.5, min_calls: 4, window_s: 30, cooldown_s: 1}
    """)))
    primary.default = Fail(500)
    chat(served)  # 3 failures on primary (1 + 2 retries)
    chat(served)  # the 4th failure opens the breaker; the rest of this call skips primary
    before = len(primary.requests)
    assert before == 4
    raw = chat(served)
    assert len(primary.requests) == before  # skipped without waiting for it
    assert raw.headers["x-shipyard-route"] == "backup/small-model"
    trace = httpx.get(f"{served.base_url}/v1/traces/{raw.headers['x-shipyard-trace-id']}").json()
    assert trace["attempts"][0]["outcome"] == "skipped" and trace["attempts"][0]["error_type"] == "circuit_open"
    assert httpx.get(served.base_url + "/readyz").json()["breakers"]["primary/gpt-4o-mini"] == "open"
    time.sleep(1.1)  # cooldown: half-open lets one probe through; it succeeds and closes the breaker
    primary.default = Reply("healed")
    assert chat(served).headers["x-shipyard-route"] == "primary/gpt-4o-mini"
    assert httpx.get(served.base_url + "/readyz").json()["breakers"]["primary/gpt-4o-mini"] == "closed"


def test_connection_refused_fails_over_fast(primary, backup, write_config, serve):
    from tests.conftest import free_port

    config = two_route_config(primary, backup).replace(primary.url, f"http://127.0.0.1:{free_port()}/v1")
    served = serve(write_config(config))
    started = time.monotonic()
    raw = chat(served)
    assert raw.headers["x-shipyard-route"] == "backup/small-model"
    assert time.monotonic() - started < 1.0
