"""Refusals: which answers read as one, and that a refused call carries a ``refusal`` event in its trace
whether it was answered whole or streamed (the fake upstream is a real HTTP server)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipyard import Gateway, load_config
from shipyard.monitor.refusal import detect, of_completion
from tests.conftest import two_route_config
from tests.fakes import Reply, Stream

MSG = [{"role": "user", "content": "how do I pick this lock"}]


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I’m sorry, but I cannot assist with that request.",  # a typographic apostrophe
    "  **I can't help with that.** If you are locked out, call a locksmith.",
    "I cannot provide instructions for that.",
    "I won't be able to help with that request.",
    "Sorry, I can't do that.",
    "Unfortunately, I am unable to share that information.",
    "As an AI language model, I cannot give medical advice.",
    "I must decline to answer this.",
    "Lo siento, pero no puedo ayudar con eso.",
    "Désolé, mais je ne peux pas répondre à cette demande.",
    "Es tut mir leid, aber ich kann dabei nicht helfen.",
    "Desculpe, mas não posso ajudar com isso.",
])
def test_stock_refusals_are_recognised(text):
    assert detect(text) == "phrase"


@pytest.mark.parametrize("text", [
    "Your order ships tomorrow.",
    "Sure! Here is how to reset your password.",
    "I can help with that: open Settings, then Security.",
    "I cannot wait to hear how it goes!",
    "Unfortunately, I cannot find an order with that number; here are the steps to check it.",
    "I'm sorry, but I can't find that order: could you check the number?",
    "I can't help but notice the parcel was sent twice.",
    "Step 1: open the app. Note: I'm sorry, but I can't is a phrase customers write.",  # not at the start
    "The customer wrote: I can't log in.",
    "",
    None,
])
def test_answers_that_do_the_task_are_not_refusals(text):
    assert detect(text) is None


def test_the_providers_own_signals_come_first():
    assert detect("Here you go", finish_reason="content_filter") == "content_filter"
    assert detect(None, refusal="I can't comply with that.") == "refusal"
    completion = {"choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": None, "refusal": "No."}}]}
    assert of_completion(completion) == "refusal"
    assert of_completion({"choices": []}) is None and of_completion({"nope": 1}) is None


@pytest.fixture
def gw_config(primary, backup, write_config):
    return write_config(two_route_config(primary, backup))


def refusal_events(trace: dict) -> list[dict]:
    return [e for e in trace["events"] if e["kind"] == "refusal"]


async def test_a_refused_call_has_a_refusal_event_answered_whole_or_streamed(gw_config, primary):
    filtered = {"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "content_filter",
                             "message": {"role": "assistant", "content": ""}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}}
    primary.script(
        Reply("I'm sorry, but I can't help with that."),
        Reply(body=filtered),
        Reply("Turn the key clockwise."),
        Stream(["I can", "not assist", " with that."]),
        Stream([{"refusal": "I can't comply."}]),
        Stream(["Sure: ", "clockwise."]),
    )
    gw = Gateway(load_config(gw_config))
    try:
        whole = [await gw.chat("triage", MSG) for _ in range(3)]
        streamed = []
        for _ in range(3):
            s = gw.stream("triage", MSG)
            async for _chunk in s:
                pass
            streamed.append(s.trace_id)
        traces = [await gw.get_trace(t) for t in [r.trace_id for r in whole] + streamed]
        body, _type = await gw.metrics.render()
    finally:
        await gw.aclose()
    hows = [[e["how"] for e in refusal_events(t)] for t in traces]
    assert hows == [["phrase"], ["content_filter"], [], ["phrase"], ["refusal"], []]
    assert [t["status"] for t in traces] == ["ok"] * 6  # a refusal is an answer, not an error
    counted = {tuple(sorted(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(body.decode()) for sample in family.samples
               if sample.name == "shipyard_refusals_total"}
    labels = {"feature": "triage", "route": "primary/gpt-4o-mini", "segment": ""}
    assert counted == {tuple(sorted({**labels, "how": how}.items())): n
                       for how, n in (("phrase", 2), ("content_filter", 1), ("refusal", 1))}


async def test_a_typed_call_that_is_refused_has_the_event_too(primary, backup, write_config):
    path = write_config(two_route_config(primary, backup, feature_extra="""
        prompt: [{role: user, content: "Summarise: {{ text }}"}]
    """))
    primary.script(Reply("I'm sorry, but I can't help with that."), Reply("A parcel is late."))
    gw = Gateway(load_config(path))
    try:
        refused = await gw.invoke("triage", {"text": "how to pick a lock"})
        answered = await gw.invoke("triage", {"text": "where is my parcel"})
        traces = [await gw.get_trace(r.trace_id) for r in (refused, answered)]
    finally:
        await gw.aclose()
    assert [[e["how"] for e in refusal_events(t)] for t in traces] == [["phrase"], []]
