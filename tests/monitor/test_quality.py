"""Data quality of arriving inputs: each problem kind, counted on the trace, and an alert when the rate of
problem calls crosses the configured share."""

from __future__ import annotations

import time

import httpx
import pytest

from shipyard import load_config
from shipyard.config import parse_config
from shipyard.monitor.quality import QualityChecker, encoding_problem
from shipyard.store import Store
from tests.monitor.test_incidents import Receiver

BASE = """
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  f:
    owners: {incidents: a, changes: b, evaluation: c, risk: d}
    route: [{provider: p, model: m}]
    quality:
      fields:
        text: {required: true, min_length: 3, max_length: 40, languages: [en]}
        amount: {type: number, min: 0, max: 100}
        tier: {values: [free, pro]}
"""


@pytest.fixture(scope="module")
def checker():
    return QualityChecker(parse_config(BASE).model.features["f"].quality)


@pytest.mark.parametrize(("data", "expected"), [
    ({"text": "Where is my parcel, please?", "amount": 5, "tier": "pro"}, []),
    ({"amount": 5}, [("text", "missing")]),
    ({"text": "   "}, [("text", "empty")]),
    ({"text": "hi"}, [("text", "too_short")]),
    ({"text": "a very long message that goes on and on and on"}, [("text", "too_long")]),
    ({"text": "Dónde está mi paquete, por favor?"}, [("text", "language")]),
    ({"text": "CafÃ© order broken"}, [("text", "encoding")]),
    ({"text": "Where is my parcel?", "amount": -1}, [("amount", "below_min")]),
    ({"text": "Where is my parcel?", "amount": 1000}, [("amount", "above_max")]),
    ({"text": "Where is my parcel?", "amount": "12"}, [("amount", "type")]),
    ({"text": "Where is my parcel?", "tier": "gold"}, [("tier", "unexpected_value")]),
])
def test_each_problem_kind(checker, data, expected):
    assert [(p["field"], p["problem"]) for p in checker.check(data)] == expected


def test_encoding_problems():
    assert encoding_problem("caf\ufffd") and encoding_problem("a\x00b") and encoding_problem("â€™s")
    assert not encoding_problem("café, naïve, 東京, emoji 🎉")


def test_a_rate_of_problem_inputs_over_the_limit_opens_an_incident_then_resolves(primary, write_config, serve):
    """Half the inputs of the 3 s window too short (over the 20% allowed): one incident for the incidents
    owner, and only one while it lasts; good inputs then bring the rate down: its resolution."""
    receiver = Receiver()
    try:
        path = write_config(f"""
monitor: {{interval_s: 0.2}}
providers:
  p: {{kind: openai, base_url: "{primary.url}", api_key: none}}
features:
  intake:
    owners:
      incidents: {{name: oncall, webhook: "{receiver.url}/oncall"}}
      changes: b
      evaluation: c
      risk: d
    route: [{{provider: p, model: m}}]
    prompt: [{{role: user, content: "{{{{ text }}}}"}}]
    quality:
      fields: {{text: {{required: true, min_length: 5}}}}
      max_problem_rate: 0.2
      window: 3s
      min_calls: 10
""")
        served = serve(path)
        url = f"{served.base_url}/v1/features/intake/invoke"
        for i in range(10):
            text = "ok" if i % 2 else "a proper question"
            assert httpx.post(url, json={"input": {"text": text}}).status_code == 200
        metrics = httpx.get(f"{served.base_url}/metrics").text
        assert 'shipyard_quality_problems_total{feature="intake",field="text",problem="too_short",segment=""} 5.0' in metrics
        [(where, body)] = receiver.wait(1)
        assert where == "/oncall" and body["event"] == "incident.opened" and body["incident"]["key"] == "quality"
        assert body["incident"]["details"]["problems"] == 5 and body["incident"]["details"]["total"] == 10
        store = Store(load_config(path).model.storage)
        rows = [store.get_trace(r["trace_id"]) for r in store.list_traces(limit=20)]
        assert sorted(r["quality"] or 0 for r in rows) == [0] * 5 + [1] * 5
        problem = next(e for r in rows for e in r["events"] if e["kind"] == "quality")
        assert problem["problems"] == [{"field": "text", "problem": "too_short"}]
        for i in range(10):  # as many problems again, more rounds: still the one incident
            text = "ok" if i % 2 else "a proper question"
            assert httpx.post(url, json={"input": {"text": text}}).status_code == 200
            time.sleep(0.05)
        assert len(receiver.posts) == 1, receiver.posts
        deadline = time.monotonic() + 30
        while len(receiver.posts) < 2 and time.monotonic() < deadline:  # good inputs flow until it resolves
            assert httpx.post(url, json={"input": {"text": "where is my parcel?"}}).status_code == 200
        receiver.wait(2)
        for _ in range(10):  # good inputs, more rounds: nothing reopens, nothing resolves twice
            assert httpx.post(url, json={"input": {"text": "where is my parcel?"}}).status_code == 200
            time.sleep(0.1)
        assert [(p, b["event"], b["incident"]["key"]) for p, b in receiver.posts] == [
            ("/oncall", "incident.opened", "quality"), ("/oncall", "incident.resolved", "quality")]
        [incident] = store.incidents.list(include_resolved=True)
        timeline = store.incidents.get(incident["id"])["timeline"]
        assert [e["kind"] for e in timeline] == ["opened", "notified", "resolved", "notified"]
        resolved = timeline[2]["detail"]["details"]  # resolved by the rate, on enough calls
        assert resolved["total"] >= 10 and resolved["rate"] <= 0.2
        store.close()
    finally:
        receiver.close()


def test_traces_keep_the_segment_from_headers_or_input_fields(primary, write_config, serve):
    path = write_config(f"""
providers:
  p: {{kind: openai, base_url: "{primary.url}", api_key: none}}
features:
  intake:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
    prompt: [{{role: user, content: "{{{{ text }}}}"}}]
    segments: [lang, tier]
""")
    served = serve(path)
    url = f"{served.base_url}/v1/features/intake/invoke"
    httpx.post(url, json={"input": {"text": "hola", "lang": "es"}}, headers={"x-shipyard-segment-tier": "gold"})
    httpx.post(url, json={"input": {"text": "hi"}})
    store = Store(load_config(path).model.storage)
    deadline = time.monotonic() + 10
    while store.count_traces() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(str(r["segment"]) for r in store.list_traces()) == ["None", "lang=es,tier=gold"]
    store.close()
