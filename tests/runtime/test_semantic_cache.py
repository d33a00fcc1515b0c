"""The semantic cache in the pipeline, with the real local embedding model."""

from __future__ import annotations

import os

import pytest

from shipyard import Gateway
from tests.conftest import two_route_config
from tests.fakes import Reply


@pytest.fixture(scope="module", autouse=True)
def _model() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI installs shipyard[semantic]: the semantic cache tests must run")
        pytest.skip("the semantic extra is not installed: pip install 'shipyard[semantic]'")


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": text}]


@pytest.fixture
def semantic(primary, backup, write_config):
    return write_config(two_route_config(primary, backup, feature_extra="cache: {semantic: {ttl_s: 600}}"))


async def test_a_paraphrase_hits_and_a_different_question_does_not(semantic, primary):
    primary.script(Reply("Go to Settings > Security > Reset password."), Reply("fresh 1"), Reply("fresh 2"))
    async with Gateway.from_config(semantic) as gw:
        await gw.chat("triage", ask("How do I reset my password?"))
        await gw.services.background.drain()
        hit = await gw.chat("triage", ask("How can I reset my password?"))
        assert hit.cache == "semantic" and hit.content.startswith("Go to Settings")
        trace = await gw.get_trace(hit.trace_id)
        assert trace["cache"] == "semantic"
        assert any(e["kind"] == "cache_hit" and e["score"] >= 0.7 for e in trace["events"])
        # close in embedding space, different question: never served the cached answer
        negated = await gw.chat("triage", ask("I don't want to reset my password"))
        assert negated.cache is None and negated.content == "fresh 1"
        other = await gw.chat("triage", ask("How do I reset my username?"))
        assert other.cache is None and other.content == "fresh 2"


async def test_semantic_entries_are_per_tenant_and_per_system_prompt(semantic, primary):
    primary.script(Reply("acme answer"), Reply("globex answer"), Reply("other prompt answer"))
    async with Gateway.from_config(semantic) as gw:
        await gw.chat("triage", ask("How do I reset my password?"), tenant="acme")
        await gw.services.background.drain()
        globex = await gw.chat("triage", ask("How can I reset my password?"), tenant="globex")
        assert globex.cache is None and globex.content == "globex answer"
        await gw.services.background.drain()
        changed = [{"role": "system", "content": "Answer in French."},
                   {"role": "user", "content": "How can I reset my password?"}]
        reply = await gw.chat("triage", changed, tenant="acme")
        assert reply.cache is None and reply.content == "other prompt answer"


async def test_a_request_ending_with_a_tool_result_is_never_answered_semantically(semantic, primary):
    primary.script(Reply("It is 42 degrees."), Reply("It is -5 degrees."))

    def with_tool_result(value: str) -> list[dict]:
        call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        return [*ask("What is the temperature outside?"),
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": value}]

    async with Gateway.from_config(semantic) as gw:
        await gw.chat("triage", with_tool_result("42"))
        await gw.services.background.drain()
        second = await gw.chat("triage", with_tool_result("-5"))
    assert second.cache is None and second.content == "It is -5 degrees."
