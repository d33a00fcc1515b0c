"""Redis going away and coming back under load: the gateway keeps serving under its policy, loses no
trace and charges nothing twice. Uses a private redis-server on a free port (the machine's own is shared)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from shipyard import Gateway
from shipyard.errors import StateUnavailable
from tests.conftest import free_port, two_route_config

pytestmark = pytest.mark.redis
MSG = [{"role": "user", "content": "hello"}]


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False).stdout != b"PONG\n":
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(redis_url) -> Iterator[PrivateRedis]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    r = PrivateRedis()
    r.start()
    yield r
    r.stop()


def config(primary, backup, write_config, url: str, policy: str):
    extra = f'state: {{url: "{url}", on_failure: {policy}}}'
    return write_config(two_route_config(primary, backup, extra=extra, feature_extra="limits: {rpm: 100000}"))


async def test_fail_open_keeps_serving_through_a_restart_and_writes_every_trace(
    primary, backup, write_config, private_redis, caplog
):
    path = config(primary, backup, write_config, private_redis.url, "fail_open")
    ids: list[str] = []
    async with Gateway.from_config(path) as gw:

        async def load(n: int) -> None:
            for reply in await asyncio.gather(*[gw.chat("triage", MSG) for _ in range(n)]):
                ids.append(reply.trace_id)

        await load(20)
        private_redis.stop()
        await load(20)  # Redis is gone: served, degraded
        assert gw.state.degraded
        private_redis.start()
        deadline = time.monotonic() + 10
        while gw.state.degraded and time.monotonic() < deadline:
            await load(5)
            await asyncio.sleep(0.2)
        assert not gw.state.degraded  # back: limits are shared again
        await load(20)
        degraded = [t for t in [await gw.get_trace(i) for i in ids]
                    if any(e["kind"] == "state_degraded" for e in t["events"])]
    store = Gateway.from_config(path).store
    assert store.count_traces() == len(ids)  # no record lost
    store.close()
    assert 20 <= len(degraded) < len(ids)
    assert "unreachable" in caplog.text.lower()


async def test_fail_closed_refuses_with_503_while_redis_is_down(primary, backup, write_config, private_redis):
    path = config(primary, backup, write_config, private_redis.url, "fail_closed")
    async with Gateway.from_config(path) as gw:
        await gw.chat("triage", MSG)
        private_redis.stop()
        with pytest.raises(StateUnavailable) as info:
            await gw.chat("triage", MSG)
        assert info.value.status == 503 and "fail_closed" in info.value.message
        private_redis.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                await gw.chat("triage", MSG)
                break
            except StateUnavailable:
                assert time.monotonic() < deadline, "the gateway did not reconnect to Redis"
                await asyncio.sleep(0.2)
