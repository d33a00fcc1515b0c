"""The OpenAI-compatible API, spoken to by the official openai SDK over real sockets."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import two_route_config
from tests.fakes import Embed, Fail, Malformed, Reply, Stream

MSG = [{"role": "user", "content": "my invoice is wrong"}]


@pytest.fixture
def served(primary, backup, write_config, serve):
    return serve(write_config(two_route_config(primary, backup)))


def test_chat_answers_with_route_headers(served, primary):
    primary.script(Reply("from primary"))
    raw = served.client().chat.completions.with_raw_response.create(model="triage", messages=MSG)
    completion = raw.parse()
    assert completion.choices[0].message.content == "from primary"
    assert completion.usage.total_tokens == 8
    assert raw.headers["x-shipyard-route"] == "primary/gpt-4o-mini"
    assert raw.headers["x-shipyard-attempts"] == "1"
    assert len(raw.headers["x-shipyard-trace-id"]) == 32
    # the provider got the route's model and our messages, with its own key
    seen = primary.requests[-1]
    assert seen.body["model"] == "gpt-4o-mini" and seen.body["messages"] == MSG
    assert seen.headers["Authorization"] == "Bearer sk-primary"


def test_unused_request_fields_pass_through(served, primary):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    served.client().chat.completions.create(
        model="triage", messages=MSG, temperature=0.2, tools=tools, response_format={"type": "json_object"},
        extra_body={"seed": 7, "vendor_knob": {"a": 1}},
    )
    body = primary.requests[-1].body
    assert body["temperature"] == 0.2 and body["tools"] == tools and body["seed"] == 7
    assert body["response_format"] == {"type": "json_object"} and body["vendor_knob"] == {"a": 1}
    assert "stream" not in body


def test_streaming_is_parsed_by_the_sdk(served, primary):
    primary.script(Stream(["Hel", "lo", " there"]))
    stream = served.client().chat.completions.create(
        model="triage", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there"
    assert chunks[-1].usage.completion_tokens == 3
    assert primary.requests[-1].body["stream"] is True


def test_stream_fails_over_before_the_first_byte(served, primary, backup):
    primary.script(Fail(503), Fail(503), Fail(503))
    backup.script(Stream(["from ", "backup"]))
    with served.client().chat.completions.with_streaming_response.create(model="triage", messages=MSG, stream=True) as resp:
        assert resp.headers["x-shipyard-route"] == "backup/small-model"
        assert resp.headers["x-shipyard-attempts"] == "4"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == "from backup"


def test_stream_broken_after_first_byte_ends_with_an_error_event(served, primary, backup):
    primary.script(Stream(["one ", "two ", "three"], break_after=1))
    stream = served.client().chat.completions.create(model="triage", messages=MSG, stream=True)
    got = []
    with pytest.raises(openai.APIError) as info:
        for c in stream:
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "one "
    assert "closed the connection" in str(info.value) or "without [DONE]" in str(info.value)
    assert backup.requests == []  # bytes had reached the client: no failover


def test_stream_that_stalls_ends_with_an_error_not_a_hang(served, primary):
    primary.script(Stream(["one ", "two"], stall_after=1))
    stream = served.client(timeout=20).chat.completions.create(model="triage", messages=MSG, stream=True)
    with pytest.raises(openai.APIError, match="sent nothing for 1s"):
        list(stream)


def test_embeddings(served, primary):
    primary.script(Embed(dims=3))
    result = served.client().embeddings.create(model="triage", input=["a", "b"])
    assert [d.embedding for d in result.data] == [[0.1] * 3, [0.2] * 3]
    assert primary.requests[-1].path == "/v1/embeddings"


def test_models_lists_the_features(served):
    ids = [m.id for m in served.client().models.list()]
    assert ids == ["triage"]


def test_malformed_request_json_is_an_openai_error(served):
    r = httpx.post(served.base_url + "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"
    assert err["trace_id"] == r.headers["x-shipyard-trace-id"]


@pytest.mark.parametrize(
    "body,code,param",
    [
        ({"messages": MSG}, "invalid_request", "model"),
        ({"model": "triage"}, "invalid_request", "messages"),
        ({"model": "triage", "messages": "hi"}, "invalid_request", "messages"),
        ([1, 2], "invalid_json", None),
    ],
)
def test_bad_requests_say_what_is_wrong(served, body, code, param):
    r = httpx.post(served.base_url + "/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code and r.json()["error"]["param"] == param


def test_unknown_feature_is_404(served):
    with pytest.raises(openai.NotFoundError) as info:
        served.client().chat.completions.create(model="nope", messages=MSG)
    assert "known: triage" in info.value.message
    assert info.value.body["code"] == "feature_not_found"


def test_unknown_path_and_method_are_json_errors(served):
    r = httpx.get(served.base_url + "/v2/whatever")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(served.base_url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_health_and_readiness(served):
    assert httpx.get(served.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(served.base_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_caller_fault_is_returned_at_once(served, primary, backup):
    primary.script(Fail(400, "messages[0].content is too long"))
    with pytest.raises(openai.BadRequestError) as info:
        served.client().chat.completions.create(model="triage", messages=MSG)
    assert "messages[0].content is too long" in info.value.message
    assert info.value.body["code"] == "provider_rejected_request"
    assert len(primary.requests) == 1 and backup.requests == []
    assert info.value.response.headers["x-shipyard-attempts"] == "1"


def test_malformed_upstream_json_fails_over(served, primary, backup):
    primary.script(Malformed())
    backup.script(Reply("backup ok"))
    raw = served.client().chat.completions.with_raw_response.create(model="triage", messages=MSG)
    assert raw.parse().choices[0].message.content == "backup ok"
    assert len(primary.requests) == 1  # a malformed answer is not retried on the same route
    assert raw.headers["x-shipyard-route"] == "backup/small-model"


def test_all_routes_failing_without_fallback_is_503(served, primary, backup):
    primary.default = Fail(500)
    backup.default = Fail(502)
    with pytest.raises(openai.InternalServerError) as info:
        served.client().chat.completions.create(model="triage", messages=MSG)
    assert info.value.status_code == 503
    assert info.value.body["code"] == "all_routes_failed"
    assert "fallback_response" in info.value.message
    assert len(primary.requests) == 3 and len(backup.requests) == 2


def test_trace_is_served_with_its_attempts(served, primary):
    primary.script(Fail(500), Reply("ok"))
    raw = served.client().chat.completions.with_raw_response.create(model="triage", messages=MSG)
    trace_id = raw.headers["x-shipyard-trace-id"]
    trace = httpx.get(f"{served.base_url}/v1/traces/{trace_id}").json()
    assert trace["feature"] == "triage" and trace["status"] == "ok" and trace["route"] == "primary/gpt-4o-mini"
    assert [a["outcome"] for a in trace["attempts"]] == ["error", "ok"]
    assert trace["attempts"][0]["status_code"] == 500 and trace["attempts"][0]["error_type"] == "provider_unavailable"
    assert trace["total_tokens"] == 8
    missing = httpx.get(f"{served.base_url}/v1/traces/{'0' * 32}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_readiness_turns_503_while_draining(served):
    served.gateway.draining = True
    r = httpx.get(served.base_url + "/readyz")
    assert r.status_code == 503 and r.json() == {"status": "draining"}
    assert httpx.get(served.base_url + "/healthz").status_code == 200


def test_an_oversized_body_is_refused_with_413(served):
    big = b'{"model": "triage", "messages": [{"role": "user", "content": "' + b"x" * (17 * 1024 * 1024) + b'"}]}'
    r = httpx.post(served.base_url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks():
        yield big

    r = httpx.post(served.base_url + "/v1/chat/completions", content=chunks())  # no content-length: chunked
    assert r.status_code == 413


def test_stream_usage_is_always_recorded_but_only_sent_when_asked(served, primary):
    primary.script(Stream(["a", "b"]))
    with served.client().chat.completions.with_streaming_response.create(model="triage", messages=MSG, stream=True) as resp:
        chunks = list(resp.parse())
        trace_id = resp.headers["x-shipyard-trace-id"]
    assert all(c.choices for c in chunks)  # no usage-only chunk for a client that did not ask
    assert primary.requests[-1].body["stream_options"] == {"include_usage": True}
    trace = httpx.get(f"{served.base_url}/v1/traces/{trace_id}").json()
    assert trace["total_tokens"] == 7 and trace["status"] == "ok"


class BuggyProvider:
    """A third-party adapter with a bug: it breaks with a KeyError after its first chunk."""

    from shipyard.providers import ProviderSettings as Settings

    def __init__(self, name, settings):
        self.name = name

    async def start(self):
        pass

    async def aclose(self):
        pass

    async def complete(self, model, body):
        raise KeyError("choices")

    async def stream(self, model, body):
        from shipyard.providers._format import chunk

        yield chunk("c1", model, {"role": "assistant", "content": "partial"})
        raise KeyError("delta")

    async def embed(self, model, body):
        raise KeyError("data")


def test_an_adapter_bug_mid_stream_ends_with_an_error_event(write_config, serve):
    from shipyard.providers import register
    from tests.conftest import OWNERS

    register("buggy-test", BuggyProvider)
    served = serve(write_config(f"""
    providers:
      bug: {{kind: buggy-test}}
    features:
      f:
        owners: {OWNERS}
        route: [{{provider: bug, model: m}}]
    """))
    stream = served.client().chat.completions.create(model="f", messages=MSG, stream=True)
    with pytest.raises(openai.APIError, match="internal error"):
        list(stream)
    with pytest.raises(openai.InternalServerError) as info:  # non-streaming: a clean 500 JSON error
        served.client().chat.completions.create(model="f", messages=MSG)
    assert info.value.body["code"] == "internal_error"
