"""The anthropic adapter: pure translation both ways, then end to end through a served gateway, with the
official OpenAI SDK as the client and a fake Anthropic API as the upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from shipyard.errors import (
    MalformedResponse,
    ProviderRejected,
    ProviderRouteError,
    TransientProviderError,
    UnsupportedOperation,
)
from shipyard.providers import get_provider_class
from shipyard.providers.anthropic import (
    AnthropicProvider,
    AnthropicSettings,
    StreamTranslator,
    messages_url,
    to_anthropic_request,
    to_chat_completion,
    usage_from,
)
from tests.conftest import OWNERS
from tests.fake_anthropic import Events, Fail, FakeAnthropic, Message, ToolUse, message_body, message_events
from tests.fakes import FakeUpstream, Malformed, Reply

USER = [{"role": "user", "content": "hi"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="session")
def claude() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic.start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _reset_claude(request: pytest.FixtureRequest) -> None:
    if "claude" in request.fixturenames:
        fake = request.getfixturevalue("claude")
        fake.script()
        fake.default = Message()


def config(claude: FakeAnthropic, backup: FakeUpstream | None = None, *, retries: int = 1,
           base_url: str | None = None) -> str:
    second = """
          - {provider: backup, model: small-model, timeout_s: 1, retries: 0}""" if backup else ""
    backup_provider = f"""
      backup: {{kind: openai, base_url: "{backup.url}", api_key: none}}""" if backup else ""
    return f"""
    providers:
      claude: {{kind: anthropic, base_url: "{base_url or claude.url}", api_key: sk-ant-test}}{backup_provider}
    features:
      assistant:
        owners: {OWNERS}
        deadline_s: 5
        backoff: {{base_s: 0.01, max_s: 0.05}}
        route:
          - {{provider: claude, model: claude-sonnet-4-5, timeout_s: 2, retries: {retries}}}{second}
    """


def headers_of(seen: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in seen.headers.items()}


# --- pure translation: request ------------------------------------------------------------------------------


def test_entry_point_names_the_adapter() -> None:
    assert get_provider_class("anthropic") is AnthropicProvider


@pytest.mark.parametrize(
    "base_url",
    ["https://api.anthropic.com", "https://api.anthropic.com/", "https://api.anthropic.com/v1",
     "https://api.anthropic.com/v1/"],
)
def test_messages_url_with_or_without_v1(base_url: str) -> None:
    assert messages_url(base_url) == "https://api.anthropic.com/v1/messages"


def test_request_lifts_system_and_developer_and_defaults_max_tokens() -> None:
    body = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "hi"},
    ]}
    payload = to_anthropic_request("claude-x", body, default_max_tokens=321)
    assert payload == {
        "model": "claude-x",
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 321,
    }


def test_request_sampling_fields_and_dropped_openai_fields() -> None:
    body = {
        "messages": USER, "max_tokens": 50, "max_completion_tokens": 70, "temperature": 1.6, "top_p": 0.9,
        "stop": "END", "user": "user-42", "n": 1, "stream_options": {"include_usage": True},
        "response_format": {"type": "json_object"}, "seed": 7, "logprobs": True, "presence_penalty": 0.5,
        "frequency_penalty": 0.1, "logit_bias": {"1": 2}, "store": True, "metadata": {"a": "b"},
    }
    payload = to_anthropic_request("m", body)
    assert payload == {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 70,  # max_completion_tokens wins over the deprecated max_tokens
        "temperature": 1.0,  # clamped into Anthropic's [0, 1]
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
    }
    assert to_anthropic_request("m", {"messages": USER, "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]


def test_request_refuses_n_above_one() -> None:
    with pytest.raises(ProviderRejected, match="n=2") as caught:
        to_anthropic_request("m", {"messages": USER, "n": 2})
    assert caught.value.status == 400


def test_request_images_and_documents() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}]}
    content = to_anthropic_request("m", body)["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ]
    with pytest.raises(ProviderRejected, match="input_audio"):
        to_anthropic_request("m", {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})
    with pytest.raises(ProviderRejected, match="base64"):
        to_anthropic_request("m", {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]})


def test_request_tool_calls_and_merged_tool_results() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "rainy"}]},
            {"role": "user", "content": "thanks, and which is warmer?"},
        ],
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "noop"}}],
    }
    payload = to_anthropic_request("m", body)
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rainy"}]},
            {"type": "text", "text": "thanks, and which is warmer?"},
        ]},
    ]
    assert payload["tools"] == [
        {"name": "get_weather", "description": "The weather in a city",
         "input_schema": WEATHER_TOOL["function"]["parameters"]},
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in payload


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None,
         {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_request_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": choice}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_anthropic_request("m", body)["tool_choice"] == expected


def test_request_refuses_what_cannot_translate() -> None:
    bad_args = {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}
    with pytest.raises(ProviderRejected, match="not valid JSON"):
        to_anthropic_request("m", bad_args)
    with pytest.raises(ProviderRejected, match="only function tools"):
        to_anthropic_request("m", {"messages": USER, "tools": [{"type": "web_search"}]})
    with pytest.raises(ProviderRejected, match="role 'function'"):
        to_anthropic_request("m", {"messages": [{"role": "function", "name": "f", "content": "x"}]})
    with pytest.raises(ProviderRejected, match="tool_call_id"):
        to_anthropic_request("m", {"messages": [{"role": "tool", "content": "x"}]})


# --- pure translation: response -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), (None, "stop")],
)
def test_response_finish_reasons(stop_reason: str | None, finish: str) -> None:
    data = {"id": "msg_1", "model": "claude-x", "content": [{"type": "text", "text": "ok"}],
            "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert to_chat_completion("claude", "m", data)["choices"][0]["finish_reason"] == finish


def test_response_text_and_tool_use() -> None:
    data = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "tool_use",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 4},
    }
    out = to_chat_completion("claude", "requested-model", data)
    assert out["id"] == "msg_1"
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-x"
    message = out["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [
        {"id": "toolu_9", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    ]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    only_tools = {**data, "content": data["content"][3:]}
    assert to_chat_completion("claude", "m", only_tools)["choices"][0]["message"]["content"] is None
    with pytest.raises(MalformedResponse):
        to_chat_completion("claude", "m", {"id": "msg_1"})


def test_usage_counts_cache_tokens_as_prompt_tokens() -> None:
    usage = {"input_tokens": 5, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100,
             "output_tokens": 3}
    assert usage_from(usage) == {"prompt_tokens": 125, "completion_tokens": 3, "total_tokens": 128,
                                 "prompt_tokens_details": {"cached_tokens": 100}}


# --- pure translation: stream -------------------------------------------------------------------------------


def translate(events: list[tuple[str, dict[str, Any]]]) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    t = StreamTranslator("claude", "requested-model")
    out: list[dict[str, Any]] = []
    for name, data in events:
        out += t.feed(name, data)
    return t, out


def test_stream_translation_text_and_tool() -> None:
    m = Message(text=["Hel", "lo"], tool_calls=[ToolUse("get_weather", {"city": "Paris"}, id="toolu_7")],
                usage={"input_tokens": 9, "cache_read_input_tokens": 1, "output_tokens": 12})
    t, chunks = translate(message_events(m, "claude-x"))
    assert t.stopped
    assert {c["id"] for c in chunks} == {"msg_fake01"}
    assert {c["model"] for c in chunks} == {"claude-x"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_7", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert all(tc["index"] == 0 for tc in calls)
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
                                   "prompt_tokens_details": {"cached_tokens": 1}}


def test_stream_translation_holds_the_role_chunk_and_ignores_unknown_events() -> None:
    start = message_events(Message(), "claude-x")[0]
    t, chunks = translate([start, ("ping", {"type": "ping"}), ("future_event", {"type": "future_event"})])
    assert chunks == []  # nothing reached the caller yet: an error now can still be retried
    with pytest.raises(MalformedResponse, match="before message_start"):
        translate([("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})])


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [("overloaded_error", TransientProviderError), ("api_error", TransientProviderError),
     ("invalid_request_error", ProviderRouteError)],
)
def test_stream_translation_error_events(error_type: str, raised: type[Exception]) -> None:
    start = message_events(Message(), "claude-x")[0]
    error = ("error", {"type": "error", "error": {"type": error_type, "message": "nope"}})
    with pytest.raises(raised, match="nope"):
        translate([start, error])


# --- the adapter against the fake, without the gateway ------------------------------------------------------


async def test_stream_without_message_stop_is_transient(claude: FakeAnthropic) -> None:
    provider = AnthropicProvider("claude", AnthropicSettings(base_url=claude.url + "/v1/", api_key="k"))
    await provider.start()
    try:
        claude.script(Message(["a", "b", "c"], end_after=2))
        chunks: list[dict[str, Any]] = []
        with pytest.raises(TransientProviderError, match="without message_stop"):
            async for c in provider.stream("claude-x", {"messages": USER}):
                chunks.append(c)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "ab"
        assert claude.requests[-1].path == "/v1/messages"
        with pytest.raises(UnsupportedOperation, match="no embeddings API"):
            await provider.embed("claude-x", {"input": "hi"})
    finally:
        await provider.aclose()


async def test_broken_answers_are_malformed(claude: FakeAnthropic, primary: FakeUpstream) -> None:
    provider = AnthropicProvider("claude", AnthropicSettings(base_url=claude.url))
    other = AnthropicProvider("other", AnthropicSettings(base_url=primary.url, api_key="none"))
    await provider.start()
    await other.start()
    try:
        claude.script(Events([("message_start", {"type": "message_start", "message": "oops"})]))
        with pytest.raises(MalformedResponse, match="without a message"):
            async for _ in provider.stream("m", {"messages": USER}):
                pass
        assert "x-api-key" not in headers_of(claude.requests[0])
        primary.script(Malformed('{"not": "a message"}'))
        with pytest.raises(MalformedResponse, match="not text/event-stream"):
            async for _ in other.stream("m", {"messages": USER}):
                pass
        primary.script(Malformed('{"not": "a message"}'))
        with pytest.raises(MalformedResponse, match="without a content list"):
            await other.complete("m", {"messages": USER})
        primary.script(Malformed("<html>oops"))
        with pytest.raises(MalformedResponse, match="not JSON"):
            await other.complete("m", {"messages": USER})
        assert "x-api-key" not in headers_of(primary.requests[0])
    finally:
        await provider.aclose()
        await other.aclose()


# --- end to end: OpenAI SDK -> gateway -> anthropic adapter -> fake Anthropic -------------------------------


def test_chat_text_through_gateway(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    claude.script(Message("Bonjour!", usage={"input_tokens": 12, "output_tokens": 3}))
    raw = client.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hello"}],
        temperature=0.2, stop=["\n\n"], user="u-1",
    )
    resp = raw.parse()
    assert raw.headers["x-shipyard-route"] == "claude/claude-sonnet-4-5"
    assert resp.id == "msg_fake01"
    assert resp.choices[0].message.content == "Bonjour!"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (12, 3, 15)

    [seen] = claude.requests
    assert seen.path == "/v1/messages"
    headers = headers_of(seen)
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert seen.body == {
        "model": "claude-sonnet-4-5",
        "system": "Answer in French.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "max_tokens": 1024,
        "temperature": 0.2,
        "stop_sequences": ["\n\n"],
        "metadata": {"user_id": "u-1"},
    }


def test_cache_usage_through_gateway(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude, base_url=claude.url + "/v1"))).client()
    claude.script(Message(usage={"input_tokens": 5, "cache_creation_input_tokens": 20,
                                 "cache_read_input_tokens": 100, "output_tokens": 3}))
    resp = client.chat.completions.create(model="assistant", messages=USER, max_tokens=64)
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (125, 3, 128)
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 100
    assert claude.requests[0].path == "/v1/messages"  # base_url given with /v1
    assert claude.requests[0].body["max_tokens"] == 64


def test_tool_call_round_trip_through_gateway(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    claude.script(
        Message(text="Checking both.", tool_calls=[ToolUse("get_weather", {"city": "Paris"}, id="toolu_1"),
                                                   ToolUse("get_weather", {"city": "Rome"}, id="toolu_2")]),
        Message("Rome is warmer."),
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Paris or Rome, which is warmer?"}]
    first = client.chat.completions.create(model="assistant", messages=messages, tools=[WEATHER_TOOL],
                                           tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"}), ("toolu_2", "get_weather", {"city": "Rome"})]
    assert claude.requests[0].body["tools"] == [
        {"name": "get_weather", "description": "The weather in a city",
         "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert claude.requests[0].body["tool_choice"] == {"type": "any"}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": "toolu_1", "content": "12C"})
    messages.append({"role": "tool", "tool_call_id": "toolu_2", "content": "19C"})
    second = client.chat.completions.create(model="assistant", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "Rome is warmer."
    assert second.choices[0].finish_reason == "stop"
    sent = claude.requests[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert sent[2]["content"] == [  # both results in the one user turn after the tool calls
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "19C"},
    ]
    assert "tool_choice" not in claude.requests[1].body


def test_stream_text_through_gateway(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    claude.script(Message(["Hel", "lo", "!"], usage={"input_tokens": 8, "output_tokens": 4}))
    chunks = list(client.chat.completions.create(model="assistant", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == "Hello!"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert {c.id for c in chunks} == {"msg_fake01"}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 4, 12)
    assert claude.requests[0].body["stream"] is True
    assert "stream_options" not in claude.requests[0].body


def test_stream_tool_call_through_gateway(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    args = {"city": "San Francisco", "unit": "celsius"}
    claude.script(Message(text=[], tool_calls=[ToolUse("get_weather", args, id="toolu_s", pieces=4)]))
    stream = client.chat.completions.create(model="assistant", messages=USER, tools=[WEATHER_TOOL],
                                            stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for c in stream:
        if not c.choices:
            continue
        finish = c.choices[0].finish_reason or finish
        for tc in c.choices[0].delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.id or ""
            if tc.function is not None:
                call["name"] += tc.function.name or ""
                call["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] == "toolu_s" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == args


def test_400_is_returned_at_once_without_retry(claude: FakeAnthropic, backup: FakeUpstream, write_config,
                                               serve) -> None:
    client = serve(write_config(config(claude, backup, retries=2))).client()
    claude.script(Fail(400, "invalid_request_error", "max_tokens: 999999 > 8192, the maximum for this model"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="assistant", messages=USER, max_tokens=999999)
    assert caught.value.status_code == 400
    assert "max_tokens: 999999 > 8192" in caught.value.message
    assert len(claude.requests) == 1
    assert backup.requests == []


def test_n_above_one_is_refused_before_any_request(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    with pytest.raises(openai.BadRequestError, match="one choice per request"):
        client.chat.completions.create(model="assistant", messages=USER, n=3)
    assert claude.requests == []


def test_529_overloaded_is_retried_then_fails_over(claude: FakeAnthropic, backup: FakeUpstream, write_config,
                                                   serve) -> None:
    client = serve(write_config(config(claude, backup, retries=1))).client()
    claude.script(Fail(529, "overloaded_error", "Overloaded"), Fail(529, "overloaded_error", "Overloaded"))
    backup.script(Reply("from the backup"))
    raw = client.chat.completions.with_raw_response.create(model="assistant", messages=USER)
    assert raw.parse().choices[0].message.content == "from the backup"
    assert raw.headers["x-shipyard-route"] == "backup/small-model"
    assert raw.headers["x-shipyard-attempts"] == "3"
    assert len(claude.requests) == 2
    assert len(backup.requests) == 1


def test_stream_error_event_before_content_is_retried(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    claude.script(Message(["never"], error="overloaded_error", error_after=0), Message(["second ", "try"]))
    stream = client.chat.completions.create(model="assistant", messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "second try"
    assert len(claude.requests) == 2


def test_stream_broken_before_content_is_retried(claude: FakeAnthropic, write_config, serve) -> None:
    client = serve(write_config(config(claude))).client()
    claude.script(Message(["never"], break_after=0), Message(["ok"]))
    stream = client.chat.completions.create(model="assistant", messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"
    assert len(claude.requests) == 2


@pytest.mark.parametrize("failure", [{"error": "overloaded_error", "error_after": 2}, {"break_after": 2}])
def test_stream_failing_mid_content_ends_with_an_error_event(claude: FakeAnthropic, write_config, serve,
                                                             failure: dict[str, Any]) -> None:
    client = serve(write_config(config(claude))).client()
    claude.script(Message(["one ", "two ", "three"], **failure))
    text = ""
    with pytest.raises(openai.APIError) as caught:
        for c in client.chat.completions.create(model="assistant", messages=USER, stream=True):
            if c.choices:
                text += c.choices[0].delta.content or ""
    assert text == "one two "  # what was sent stays sent: no failover once bytes reached the client
    assert "claude" in caught.value.message
    assert len(claude.requests) == 1


def test_fake_message_body_matches_the_stream() -> None:
    """The fake's two shapes of one message agree, so the tests of both paths test the same thing."""
    m = Message(text=["a", "b"], tool_calls=[ToolUse()])
    _, chunks = translate(message_events(m, "claude-x"))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    completion = to_chat_completion("claude", "m", message_body(m, "claude-x"))
    assert completion["choices"][0]["message"]["content"] == streamed


def test_fake_speaks_anthropics_schema() -> None:
    """The fake's messages and events validate against the official SDK's models of the API."""
    types = pytest.importorskip("anthropic.types")
    from pydantic import TypeAdapter

    m = Message(text=["a", "b"], tool_calls=[ToolUse()],
                usage={"input_tokens": 3, "cache_read_input_tokens": 2, "output_tokens": 5})
    assert types.Message.model_validate(message_body(m, "claude-x")).stop_reason == "tool_use"
    events = TypeAdapter(types.RawMessageStreamEvent)
    for name, data in message_events(m, "claude-x"):
        if name != "ping":
            assert events.validate_python(data).type == name
