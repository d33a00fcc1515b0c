"""Two gateway processes on one Redis: one rate limit, one budget, one circuit breaker, one cache.

Each test starts two real `shipyard serve` processes with the same config (Redis state with a key
prefix of its own, one SQLite trace store) and drives both at once from threads with the OpenAI SDK.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port, two_route_config
from tests.fakes import Fail, Reply

pytestmark = pytest.mark.redis
MSG = [{"role": "user", "content": "hello"}]


class Replicas:
    def __init__(self, config: Path, n: int = 2) -> None:
        self.ports = [free_port() for _ in range(n)]
        env = {k: v for k, v in os.environ.items() if k != "SHIPYARD_CONFIG"}
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "shipyard", "serve", "--config", str(config), "--port", str(p)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            for p in self.ports
        ]
        deadline = time.monotonic() + 30
        for port, proc in zip(self.ports, self.procs, strict=True):
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise AssertionError(f"a replica did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.05)
        self.clients = [openai.OpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="x", max_retries=0)
                        for p in self.ports]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def spray(self, n: int, **kwargs) -> list[object]:
        """n calls at once, alternating between the replicas: each result or the exception it raised."""

        def one(i: int) -> object:
            try:
                return self.clients[i % len(self.clients)].chat.completions.with_raw_response.create(
                    model="triage", messages=MSG, **kwargs)
            except openai.APIStatusError as exc:
                return exc

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(n)))


@pytest.fixture
def replicas(primary, backup, write_config, redis_url, state_prefix) -> Iterator:
    started: list[Replicas] = []

    def start(feature_extra: str, extra: str = "") -> Replicas:
        state = f'state: {{url: "{redis_url}", prefix: "{state_prefix}"}}'
        extra = textwrap.indent((state + "\n" + extra).strip(), "    ").lstrip()
        r = Replicas(write_config(two_route_config(primary, backup, extra=extra, feature_extra=feature_extra)))
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def test_one_rate_limit_holds_across_two_replicas_under_concurrent_load(replicas, primary):
    primary.default = Reply(delay_s=0.01)
    r = replicas("limits: {rpm: 25}")
    results = r.spray(80)
    ok = [x for x in results if not isinstance(x, Exception)]
    limited = [x for x in results if isinstance(x, openai.RateLimitError)]
    assert len(ok) == 25 and len(limited) == 55  # exact: not 25 per replica
    ports = {x.http_request.url.port for x in ok}
    assert ports == set(r.ports)  # both replicas served some


def test_one_budget_holds_across_two_replicas_within_one_call(replicas, primary):
    # $1000/M tokens; each call reserves (prompt ~8 + max_tokens 20) tokens = ~$0.028, costs 8 tokens = $0.008
    primary.default = Reply(delay_s=0.02)
    prices = 'pricing: {"primary/gpt-4o-mini": {input: 1000, output: 1000}, "backup/small-model": {input: 1, output: 1}}'
    r = replicas("budget: {usd_per_day: 0.1}", extra=prices)
    for _ in range(4):
        r.spray(30, max_tokens=20)
    results = r.spray(30, max_tokens=20)
    assert any(isinstance(x, openai.RateLimitError) for x in results)
    served = len(primary.requests)
    spent = served * 0.008
    assert spent <= 0.1 + 0.028  # within one call's reservation of the limit
    assert served >= 9  # and the budget was used, not refused early: 0.1 / 0.008 = 12.5 at best


def test_a_breaker_opened_by_one_replica_is_open_on_the_other(replicas, primary, backup):
    primary.default = Fail(500)
    backup.default = Reply("backup")
    r = replicas("circuit_breaker: {min_calls: 4, failure_ratio: 0.5, cooldown_s: 30, window_s: 30}")
    a, b = r.clients
    for _ in range(4):  # replica A sees primary fail (2 retries each) and opens the breaker
        assert a.chat.completions.create(model="triage", messages=MSG).choices[0].message.content == "backup"
    seen = len(primary.requests)
    deadline = time.monotonic() + 3
    while True:  # B learns it within its poll interval (~1 s), without sending B's own traffic to primary
        reply = b.chat.completions.with_raw_response.create(model="triage", messages=MSG)
        if len(primary.requests) == seen or time.monotonic() > deadline:
            break
        seen = len(primary.requests)
        time.sleep(0.3)
    assert reply.headers["x-shipyard-route"] == "backup/small-model"
    before = len(primary.requests)
    for _ in range(3):
        b.chat.completions.create(model="triage", messages=MSG)
    assert len(primary.requests) == before  # B skips primary: the breaker is one


def test_two_replicas_share_one_cache(replicas, primary):
    primary.script(Reply("cached once"), Reply("never"))
    r = replicas("cache: {exact: {ttl_s: 60}}")
    a, b = r.clients
    a.chat.completions.create(model="triage", messages=MSG)
    for _ in range(50):
        hit = b.chat.completions.with_raw_response.create(model="triage", messages=MSG)
        if hit.headers["x-shipyard-cache"] == "exact":
            break
        time.sleep(0.02)
    assert hit.headers["x-shipyard-cache"] == "exact" and hit.parse().choices[0].message.content == "cached once"
