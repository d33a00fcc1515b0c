"""Policy rules (guard.policy) through the Gateway, against fake provider servers, and over HTTP."""

from __future__ import annotations

import asyncio
import json
import textwrap

import openai
import pytest

from shipyard import Gateway, load_config
from shipyard.errors import ConfigError, PolicyViolation
from shipyard.store import Store
from tests.conftest import OWNERS
from tests.fakes import Reply, Stream

# The rules of the issue, exactly as a user writes them.
RULES = """\
- {name: no-legal-advice, on: output, match: "(?i)you should sue", severity: critical, action: block}
- {name: disclaimer, on: output, require: "not financial advice", severity: minor, action: flag}
"""
ASK = [{"role": "user", "content": "My landlord kept my deposit. What now?"}]
CAUGHT = "you should sue"


def policy_config(primary, write_config, rules: str = RULES, extra: str = "") -> object:
    text = f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: sk-primary}}
    features:
      support-triage:
        owners: {OWNERS}
        deadline_s: 5
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 1, retries: 0}}
{textwrap.indent(extra, " " * 8)}
        guard:
          policy:
{textwrap.indent(rules, " " * 12)}
    """
    return write_config(text)


def findings(trace: dict) -> list[dict]:
    return [e for e in trace["events"] if e["kind"] == "finding" and e["guard"] == "policy"]


async def test_the_issue_config_blocks_the_caught_answer_naming_the_rule_not_the_text(primary, write_config):
    primary.script(Reply("Honestly, You Should Sue them. This is not financial advice."))
    async with Gateway.from_config(policy_config(primary, write_config)) as gw:
        with pytest.raises(PolicyViolation) as info:
            await gw.chat("support-triage", ASK)
    err = info.value
    assert err.status == 400 and err.code == "policy_violation"
    assert "no-legal-advice" in err.message and "support-triage" in err.message
    assert err.details == {"rule": "no-legal-advice", "severity": "critical", "where": "output"}
    assert CAUGHT not in json.dumps(err.to_dict()).lower()


async def test_flag_serves_and_the_trace_has_the_finding_never_the_text(primary, write_config):
    primary.script(Reply("Keep the receipts and write to your landlord."))
    async with Gateway.from_config(policy_config(primary, write_config)) as gw:
        reply = await gw.chat("support-triage", ASK)
        trace = await gw.get_trace(reply.trace_id)
    assert reply.content == "Keep the receipts and write to your landlord."
    [finding] = findings(trace)
    assert finding == {**finding, "rule": "disclaimer", "severity": "minor", "action": "flag",
                       "where": "output", "check": "require"}
    assert trace["status"] == "ok"


async def test_a_blocked_answer_is_in_the_trace_as_a_critical_finding(primary, write_config):
    primary.script(Reply(f"Well, {CAUGHT}."))
    async with Gateway.from_config(policy_config(primary, write_config)) as gw:
        call = gw.new_call("support-triage", "chat", {"messages": ASK})  # its trace id, for the lookup
        with pytest.raises(PolicyViolation):
            await gw.run(call)
        trace = await gw.get_trace(call.trace_id)
    assert trace["status"] == "error" and trace["error_type"] == "policy_violation"
    assert {(f["rule"], f["severity"], f["action"]) for f in findings(trace)} == {
        ("no-legal-advice", "critical", "block"), ("disclaimer", "minor", "flag")}
    assert CAUGHT not in json.dumps(trace).lower()


async def test_an_input_rule_blocks_before_the_provider_sees_anything(primary, write_config):
    rules = "- {name: no-lawsuits, on: input, deny_topics: [sue, lawsuit], severity: major}\n"
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        with pytest.raises(PolicyViolation, match="no-lawsuits") as info:
            await gw.chat("support-triage", [{"role": "user", "content": "Can I s\u200bue them?"}])
        assert info.value.details["where"] == "input" and "s\u200bue" not in info.value.message
        assert primary.requests == []
        await gw.chat("support-triage", ASK)
    assert len(primary.requests) == 1


async def test_the_system_prompt_is_not_judged_as_input(primary, write_config):
    rules = "- {name: no-lawsuits, on: input, deny_topics: [sue]}\n"
    messages = [{"role": "system", "content": "Never tell anyone to sue."}, *ASK]
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        assert (await gw.chat("support-triage", messages)).content


async def test_fallback_serves_the_fallback_response_on_output_and_on_input(primary, write_config):
    rules = textwrap.dedent("""\
        - {name: no-legal-advice, on: output, match: "(?i)you should sue", action: fallback}
        - {name: no-refund-talk, on: input, deny_topics: [chargeback], action: fallback}
    """)
    extra = 'fallback_response: {content: "A person will follow up."}\n'
    primary.script(Reply(f"Frankly {CAUGHT}."))
    async with Gateway.from_config(policy_config(primary, write_config, rules, extra)) as gw:
        out = await gw.chat("support-triage", ASK)
        assert (out.content, out.route) == ("A person will follow up.", "fallback")
        trace = await gw.get_trace(out.trace_id)
        assert trace["status"] == "fallback" and findings(trace)[0]["action"] == "fallback"
        primary.script()
        inp = await gw.chat("support-triage", [{"role": "user", "content": "I will file a Chargeback"}])
        assert (inp.content, inp.route) == ("A person will follow up.", "fallback")
        assert primary.requests == []  # the input fallback cost no provider call
        streamed = gw.stream("support-triage", [{"role": "user", "content": "chargeback now"}])
        assert "".join([c["choices"][0]["delta"].get("content") or "" async for c in streamed
                        if c["choices"]]) == "A person will follow up."


async def test_fallback_without_a_fallback_response_is_the_400(primary, write_config):
    rules = '- {name: no-legal-advice, on: output, match: "(?i)you should sue", action: fallback}\n'
    primary.script(Reply(f"{CAUGHT}!"))
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        with pytest.raises(PolicyViolation) as info:
            await gw.chat("support-triage", ASK)
    assert info.value.code == "policy_violation" and info.value.details["rule"] == "no-legal-advice"


def tool_answer(*names: str) -> dict:
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": "{}"}}
             for i, n in enumerate(names)]
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": calls}}]}


async def test_allowed_tools_blocks_a_call_to_an_unlisted_function(primary, write_config):
    rules = "- {name: tools, on: output, allowed_tools: [lookup_order], severity: critical}\n"
    primary.script(Reply(body=tool_answer("lookup_order")), Reply(body=tool_answer("lookup_order", "issue_refund")))
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        ok = await gw.chat("support-triage", ASK, tools=[{"type": "function", "function": {"name": "lookup_order"}}])
        assert ok.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_order"
        call = gw.new_call("support-triage", "chat", {"messages": ASK})
        with pytest.raises(PolicyViolation, match="'tools'"):
            await gw.run(call)
        trace = await gw.get_trace(call.trace_id)
    assert findings(trace)[0]["tool"] == "issue_refund"


async def test_a_streamed_answer_is_cut_before_the_violating_text(primary, write_config):
    primary.script(Stream(["Well, ", "you sh", "ould sue them", " and win.", " Bye."]))
    async with Gateway.from_config(policy_config(primary, write_config)) as gw:
        stream = gw.stream("support-triage", ASK)
        got: list[str] = []
        with pytest.raises(PolicyViolation, match="no-legal-advice"):
            async for c in stream:
                if c["choices"]:
                    got.append(c["choices"][0]["delta"].get("content") or "")
        trace = await gw.get_trace(stream.trace_id)
    assert "".join(got) == "Well, you sh"  # the chunk that completed the match never left
    assert trace["status"] == "error" and trace["error_type"] == "policy_violation"
    assert [f["rule"] for f in findings(trace)] == ["no-legal-advice"]


async def test_a_stream_is_judged_whole_at_its_end(primary, write_config):
    primary.script(Stream(["Buy ", "low. ", "This is not fin", "ancial advice."]), Stream(["Buy ", "low."]))
    async with Gateway.from_config(policy_config(primary, write_config)) as gw:
        clean = gw.stream("support-triage", ASK)
        assert "".join([c["choices"][0]["delta"].get("content") or "" async for c in clean if c["choices"]])
        flagged = gw.stream("support-triage", ASK)
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in flagged if c["choices"]])
        assert text == "Buy low."  # flag: served whole
        assert findings(await gw.get_trace(clean.trace_id)) == []
        assert [f["rule"] for f in findings(await gw.get_trace(flagged.trace_id))] == ["disclaimer"]


async def test_max_chars_cuts_a_stream_and_blocks_a_long_answer(primary, write_config):
    rules = "- {name: short, on: output, max_chars: 12}\n"
    primary.script(Stream(["12345", "67890", "abcdef", "xyz"]), Reply("x" * 13))
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        got: list[str] = []
        with pytest.raises(PolicyViolation, match="short"):
            async for c in gw.stream("support-triage", ASK):
                if c["choices"]:
                    got.append(c["choices"][0]["delta"].get("content") or "")
        assert "".join(got) == "1234567890"
        with pytest.raises(PolicyViolation, match="max_chars"):
            await gw.chat("support-triage", ASK)


async def test_allowed_tools_on_a_stream_stops_at_the_tool_call(primary, write_config):
    rules = "- {name: tools, on: output, allowed_tools: [lookup_order]}\n"
    start = {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                             "function": {"name": "delete_account", "arguments": ""}}]}
    rest = {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    primary.script(Stream(["Let me do that.", start, rest]))
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        deltas = []
        with pytest.raises(PolicyViolation, match="tools"):
            async for c in gw.stream("support-triage", ASK):
                deltas += [c["choices"][0]["delta"]] if c["choices"] else []
    assert not any("tool_calls" in d for d in deltas)


async def test_languages_on_input(primary, write_config):
    rules = "- {name: english-only, on: input, languages: [en], action: block}\n"
    async with Gateway.from_config(policy_config(primary, write_config, rules)) as gw:
        await gw.chat("support-triage", ASK)
        with pytest.raises(PolicyViolation, match="english-only"):
            await gw.chat("support-triage", [{"role": "user", "content": "Mi è stato addebitato due volte l'abbonamento."}])


def test_over_http_with_the_openai_sdk(primary, write_config, serve):
    served = serve(policy_config(primary, write_config))
    client = served.client()
    primary.script(Reply(f"Honestly {CAUGHT}."))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="support-triage", messages=ASK)
    error = info.value.response.json()["error"]
    assert error["code"] == "policy_violation" and error["type"] == "invalid_request_error"
    assert error["details"] == {"rule": "no-legal-advice", "severity": "critical", "where": "output"}
    assert CAUGHT not in info.value.response.text.lower()

    primary.script(Stream(["Honestly, ", "you should sue.", " Really."]))
    got = []
    with pytest.raises(openai.APIError, match="no-legal-advice"):
        for c in client.chat.completions.create(model="support-triage", messages=ASK, stream=True):
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "Honestly, "


# ------------------------------------------------------------------------------------------------ config


def config_problem(primary, write_config, rules: str) -> tuple[str, int, str, str]:
    path = policy_config(primary, write_config, rules)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [(_, line, field, message)] = info.value.problems
    lines = path.read_text().splitlines()
    return lines[line - 1].strip(), line, field, message


def test_a_bad_pattern_is_a_config_error_at_its_line(primary, write_config):
    rules = RULES + '- {name: sneaky, on: output, match: "(?<=a)b"}\n'
    text, _, field, message = config_problem(primary, write_config, rules)
    assert text.startswith("- {name: sneaky") and field == "features.support-triage.guard.policy.2.match"
    assert "RE2" in message and "lookaround" in message


def test_duplicate_rule_names_point_at_the_second(primary, write_config):
    rules = RULES + "- {name: disclaimer, on: output, max_chars: 100}\n"
    text, _, field, message = config_problem(primary, write_config, rules)
    assert text.startswith("- {name: disclaimer, on: output, max_chars")
    assert field == "features.support-triage.guard.policy.2.name" and "rule 1" in message


@pytest.mark.parametrize(("rule", "field", "message"), [
    ("{name: r, on: input, require: hello}", "policy.0.on", "needs on: output"),
    ("{name: r, on: both, max_chars: 3}", "policy.0.on", "needs on: output"),
    ("{name: r, on: output, match: x, require: y}", "policy.0", "exactly one check"),
    ("{name: r, on: output}", "policy.0", "exactly one check"),
    ("{name: r, on: output, languages: [en, english]}", "policy.0.languages.1", "ISO 639-1"),
    ("{name: r, on: sideways, match: x}", "policy.0.on", "'input', 'output' or 'both'"),
    ("{name: r, on: output, match: x, action: warn}", "policy.0.action", "'block', 'flag' or 'fallback'"),
    ("{name: r, match: x}", "policy.0.on", "required key is missing"),
    ("{name: r, on: input, deny_topics: []}", "policy.0.deny_topics", "at least 1"),
])
def test_rule_mistakes_are_config_errors_with_a_line(primary, write_config, rule, field, message):
    text, _, got_field, got_message = config_problem(primary, write_config, f"- {rule}\n")
    assert text == f"- {rule}"
    assert got_field == f"features.support-triage.guard.{field}" and message in got_message


def test_policy_changes_reach_the_audit_log(primary, write_config):
    path = policy_config(primary, write_config)

    async def start() -> None:
        async with Gateway(load_config(path)):
            pass

    asyncio.run(start())
    asyncio.run(start())  # unchanged: nothing new
    path.write_text(path.read_text().replace("severity: minor", "severity: major"))
    asyncio.run(start())
    store = Store(load_config(path).model.storage)
    got = [e for e in store.audit.entries() if e["action"] == "policy.changed"]
    assert [(e["target"], e["details"]) for e in got] == [("features.support-triage.guard", {"feature": "support-triage"})] * 2
    assert got[0]["before_digest"] is None and got[1]["before_digest"] == got[0]["after_digest"]
    assert got[1]["after_digest"] != got[0]["after_digest"] and store.audit.verify() is None
    store.close()
