"""The Gateway as a Python library: the production path without a server."""

from __future__ import annotations

import pytest

from shipyard import Gateway, load_config
from shipyard.errors import AllRoutesFailed, InputValidationError, UnknownFeature
from tests.conftest import OWNERS, two_route_config
from tests.fakes import Fail, Hang, Reply, Stream

MSG = [{"role": "user", "content": "hi there"}]


class Sleeper:
    """Records the backoff delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def gw_config(primary, backup, write_config):
    return write_config(two_route_config(primary, backup))


async def test_chat_stream_and_traces_through_the_library(gw_config, primary):
    primary.script(Reply("library answer"), Stream(["a", "b"]))
    async with Gateway.from_config(gw_config) as gw:
        reply = await gw.chat("triage", MSG, temperature=0)
        assert reply.content == "library answer" and reply.route == "primary/gpt-4o-mini" and reply.attempts == 1
        assert primary.requests[0].body["temperature"] == 0
        stream = gw.stream("triage", MSG)
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
        assert text == "ab" and stream.route == "primary/gpt-4o-mini"
        trace_ids = [reply.trace_id, stream.trace_id]
    # closed: every trace is in the store
    store = Gateway.from_config(gw_config).store
    for trace_id in trace_ids:
        assert store.get_trace(trace_id)["status"] == "ok"
    assert store.get_trace(stream.trace_id)["stream"] is True
    store.close()


async def test_backoff_uses_full_jitter_and_retry_after_exactly(gw_config, primary):
    sleeper = Sleeper()
    primary.script(Fail(500), Fail(429, headers={"Retry-After": "2"}), Reply("ok"))
    gw = Gateway(load_config(gw_config), sleep=sleeper, rand=lambda: 0.5)
    try:
        reply = await gw.chat("triage", MSG)
    finally:
        await gw.aclose()
    assert reply.attempts == 3
    # retry 0: 0.5 * min(max_s, base_s * 2**0) with base_s 0.01; then Retry-After: 2 s exactly
    assert sleeper.delays == [pytest.approx(0.005), 2.0]


async def test_a_stream_closed_early_is_recorded(gw_config, primary):
    primary.script(Stream(["a", "b", "c"], delay_s=0.05))
    async with Gateway.from_config(gw_config) as gw:
        async with gw.stream("triage", MSG) as stream:
            async for _chunk in stream:
                break
        trace_id = stream.trace_id
        await gw.writer.flush()
        assert gw.store.get_trace(trace_id)["status"] == "client_closed"


async def test_unknown_feature_and_bad_input_raise_our_errors(gw_config):
    async with Gateway.from_config(gw_config) as gw:
        with pytest.raises(UnknownFeature, match="known: triage"):
            await gw.chat("nope", MSG)


async def test_all_routes_failing_raises(gw_config, primary, backup):
    primary.default = Fail(500)
    backup.default = Fail(500)
    async with Gateway(load_config(gw_config), sleep=Sleeper()) as gw:
        with pytest.raises(AllRoutesFailed) as info:
            await gw.chat("triage", MSG)
    assert len(info.value.details) == 5


def python_config(write_config, route: str, extra: str = "") -> object:
    return write_config(f"""
    providers:
      local: {{kind: python, target: "tests.runtime.inprocess_models:{route}", options: {{}} }}
      aio: {{kind: python, target: "tests.runtime.inprocess_models:async_json"}}
      vec: {{kind: python, target: "tests.runtime.inprocess_models:echo", embed_target: "tests.runtime.inprocess_models:vectors"}}
    features:
      local:
        owners: {OWNERS}
        route: [{{provider: local, model: m1}}]
      intent:
        owners: {OWNERS}
        input_schema: {{type: object, required: [text], properties: {{text: {{type: string}}}}}}
        output_schema: {{type: object, required: [category]}}
        route: [{{provider: aio, model: m2}}]
      vectors:
        owners: {OWNERS}
        route: [{{provider: vec, model: m3}}]
    {extra}
    """)


async def test_python_provider_sync_runs_in_a_thread(write_config):
    async with Gateway.from_config(python_config(write_config, "echo")) as gw:
        reply = await gw.chat("local", MSG)
    assert reply.content == "echo: hi there (m1, True)"
    assert reply.route == "local/m1"


async def test_python_provider_async_and_invoke(write_config):
    async with Gateway.from_config(python_config(write_config, "echo")) as gw:
        result = await gw.invoke("intent", {"text": "charged twice"})
        assert result.output == {"category": "billing"} and result.route == "aio/m2"
        with pytest.raises(InputValidationError) as info:
            await gw.invoke("intent", {"txt": "typo"})
        assert info.value.details[0]["path"] == "$"
        emb = await gw.embed("vectors", ["ab", "abc"])
        assert [d["embedding"] for d in emb.body["data"]] == [[2.0, 1.0], [3.0, 1.0]]
        trace = await gw.get_trace(result.trace_id)
        assert trace["total_tokens"] == 3


@pytest.mark.parametrize("target,message", [("broken", "model file is corrupt"), ("wrong_type", "return a str")])
async def test_python_provider_failures_are_route_errors(write_config, target, message):
    async with Gateway.from_config(python_config(write_config, target)) as gw:
        with pytest.raises(AllRoutesFailed, match=message):
            await gw.chat("local", MSG)


async def test_python_provider_import_error_fails_at_start(write_config):
    from shipyard.errors import ProviderRouteError

    gw = Gateway.from_config(python_config(write_config, "does_not_exist"))
    with pytest.raises(ProviderRouteError, match="has no attribute"):
        await gw.start()
    await gw.aclose()


async def test_a_cancelled_probe_gives_its_half_open_slot_back(primary, backup, write_config):
    import asyncio

    config = write_config(two_route_config(primary, backup, feature_extra="""
        circuit_breaker: {failure_ratio: 0.5, min_calls: 2, window_s: 30, cooldown_s: 0.2}
    """))
    primary.default = Fail(500)
    async with Gateway(load_config(config), sleep=Sleeper()) as gw:
        await gw.chat("triage", MSG)  # two failures on primary open its breaker
        await asyncio.sleep(0.25)  # half-open: the next call is the probe
        primary.default = Hang(5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(gw.chat("triage", MSG), 0.2)
        primary.default = Reply("healthy again")
        reply = await gw.chat("triage", MSG)
    assert reply.route == "primary/gpt-4o-mini" and reply.content == "healthy again"


async def test_the_deadline_covers_a_stream_that_trickles(primary, backup, write_config):
    from shipyard.errors import DeadlineExceeded

    config = write_config(two_route_config(primary, backup).replace("deadline_s: 5", "deadline_s: 1"))
    primary.script(Stream(["a"] * 20, delay_s=0.3))
    async with Gateway.from_config(config) as gw:
        stream = gw.stream("triage", MSG)
        got = []
        with pytest.raises(DeadlineExceeded, match="deadline of 1s"):
            async for chunk in stream:
                got.append(chunk)
        await gw.writer.flush()
        trace = gw.store.get_trace(stream.trace_id)
    assert 1 <= len(got) < 10
    assert trace["status"] == "error" and trace["error_type"] == "deadline_exceeded" and trace["http_status"] == 200


async def test_a_rejected_repair_still_gets_the_fallback(primary, backup, write_config):
    config = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}"}}
    features:
      intent:
        owners: {OWNERS}
        output_schema: {{type: object, required: [category]}}
        route: [{{provider: primary, model: m, retries: 0}}]
        fallback_response: {{category: other}}
    """)
    primary.script(Reply("not json"), Fail(400, "context length exceeded"))
    async with Gateway.from_config(config) as gw:
        result = await gw.invoke("intent", {"text": "hi"})
    assert result.output == {"category": "other"} and result.route == "fallback"


async def test_slow_in_process_models_do_not_hold_traces_back(write_config):
    import asyncio

    config = write_config(f"""
    providers:
      slow: {{kind: python, target: "tests.runtime.inprocess_models:sleepy", max_workers: 2}}
    features:
      slow:
        owners: {OWNERS}
        route: [{{provider: slow, model: m, timeout_s: 0.1, retries: 0}}]
    """)
    async with Gateway.from_config(config) as gw:
        for _ in range(8):  # each times out but keeps a worker thread for a while
            with pytest.raises(AllRoutesFailed):
                await gw.chat("slow", MSG)
        records = await asyncio.wait_for(asyncio.to_thread(gw.store.list_traces, limit=100), 1)
        await asyncio.wait_for(gw.writer.flush(), 2)
        assert len(gw.store.list_traces(limit=100)) == 8
    assert records is not None
