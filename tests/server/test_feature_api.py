"""The typed feature API: input contract, prompt rendering, output contract with repair, fallback."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import OWNERS
from tests.fakes import Fail, Reply

SCHEMAS = """
    input_schema:
      type: object
      required: [text]
      properties: {text: {type: string, minLength: 1, maxLength: 50}, lang: {enum: [en, fr]}}
      additionalProperties: false
    output_schema:
      type: object
      required: [category]
      properties: {category: {enum: [billing, technical, account, other]}}
    prompt:
      - {role: system, content: "Classify. Answer only JSON: {\\"category\\": \\"...\\"}"}
      - {role: user, content: "{{ text }}{% if lang %} (lang={{ lang }}){% endif %}"}
"""


def config(primary, backup, fallback: bool = True) -> str:
    return f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}"}}
      backup: {{kind: openai, base_url: "{backup.url}"}}
    features:
      intent:
        owners: {OWNERS}
        backoff: {{base_s: 0.01, max_s: 0.02}}
        route:
          - {{provider: primary, model: big, timeout_s: 1, retries: 1}}
          - {{provider: backup, model: small, timeout_s: 1, retries: 0}}
{SCHEMAS.replace(chr(10) + "    ", chr(10) + "        ")}
        {"fallback_response: {category: other}" if fallback else ""}
    """


@pytest.fixture
def served(primary, backup, write_config, serve):
    return serve(write_config(config(primary, backup)))


def invoke(served, payload, name="intent"):
    return httpx.post(f"{served.base_url}/v1/features/{name}/invoke", json=payload, timeout=10)


def test_invoke_renders_the_prompt_and_validates_the_output(served, primary):
    primary.script(Reply('{"category": "billing"}'))
    r = invoke(served, {"input": {"text": "I was charged twice", "lang": "en"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == {"category": "billing"} and body["route"] == "primary/big"
    assert body["trace_id"] == r.headers["x-shipyard-trace-id"]
    sent = primary.requests[-1].body["messages"]
    assert sent[0]["role"] == "system" and sent[1] == {"role": "user", "content": "I was charged twice (lang=en)"}


def test_fenced_json_is_accepted(served, primary):
    primary.script(Reply('```json\n{"category": "technical"}\n```'))
    r = invoke(served, {"input": {"text": "app crashes"}})
    assert r.json().get("output") == {"category": "technical"}, r.text


def test_bad_input_lists_every_failing_field(served, primary):
    r = invoke(served, {"input": {"text": "", "lang": "de", "extra": 1}})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "input_validation_failed"
    paths = {d["path"] for d in err["details"]}
    assert paths == {"$", "$.text", "$.lang"}
    assert "$.text" in err["message"] and err["trace_id"]
    assert primary.requests == []  # never reached a provider


def test_repair_reask_shows_the_model_its_errors(served, primary, backup):
    primary.script(Reply('{"category": "refund"}'), Reply('{"category": "billing"}'))
    r = invoke(served, {"input": {"text": "money back please"}})
    assert r.json()["output"] == {"category": "billing"} and r.json()["route"] == "primary/big"
    repair = primary.requests[1].body["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"category": "refund"}'}
    assert "$.category" in repair[-1]["content"] and "is not one of" in repair[-1]["content"]
    assert backup.requests == []


def test_after_a_failed_repair_the_next_route_is_tried(served, primary, backup):
    primary.script(Reply("not json at all"), Reply("still not json"))
    backup.script(Reply('{"category": "account"}'))
    r = invoke(served, {"input": {"text": "reset my password"}})
    assert r.json() == {"output": {"category": "account"}, "trace_id": r.headers["x-shipyard-trace-id"], "route": "backup/small"}
    assert len(primary.requests) == 2
    # the next route gets the original prompt, not the failed repair conversation
    assert len(backup.requests[0].body["messages"]) == 2


def test_fallback_when_no_route_meets_the_contract(served, primary, backup):
    primary.default = Reply('{"category": "nope"}')
    backup.default = Reply('{"wrong": true}')
    r = invoke(served, {"input": {"text": "hmm"}})
    assert r.status_code == 200
    assert r.json()["output"] == {"category": "other"} and r.json()["route"] == "fallback"
    assert r.headers["x-shipyard-route"] == "fallback"
    trace = httpx.get(f"{served.base_url}/v1/traces/{r.json()['trace_id']}").json()
    kinds = [e["kind"] for e in trace["events"]]
    assert kinds.count("finding") == 4 and kinds.count("repair") == 2 and kinds[-1] == "fallback"
    findings = [(e["guard"], e["severity"], e["action"]) for e in trace["events"] if e["kind"] == "finding"]
    assert findings == [("output_contract", "major", "repair"), ("output_contract", "major", "next_route"),
                        ("output_contract", "major", "repair"), ("output_contract", "critical", "fail")]
    assert trace["severity"] == "critical"  # the worst finding, on the trace itself


def test_without_fallback_a_broken_contract_is_a_clear_error(primary, backup, write_config, serve):
    served = serve(write_config(config(primary, backup, fallback=False)))
    primary.default = Reply('{"category": "nope"}')
    backup.default = Fail(500)
    r = invoke(served, {"input": {"text": "hmm"}})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "all_routes_failed"
    primary.default = Reply('{"category": "nope"}')
    backup.default = Reply('{"category": "nope"}')
    r = invoke(served, {"input": {"text": "hmm"}})
    assert r.status_code == 502 and r.json()["error"]["code"] == "output_contract_failed"
    assert "$.category" in r.json()["error"]["message"]


def test_invoke_body_must_be_input(served):
    r = invoke(served, {"text": "hi"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = invoke(served, {"input": {"text": "hi"}}, name="missing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "feature_not_found"
