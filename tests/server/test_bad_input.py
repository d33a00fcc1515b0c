"""Hostile and broken requests over HTTP: each gets a clean OpenAI-style answer, never a traceback or a
hang, and whatever is recorded reaches the store."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from shipyard.store import Store
from tests.conftest import two_route_config
from tests.fakes import Reply

INVOKE_FEATURE = """
prompt: [{role: user, content: "{{ text }}"}]
"""


@pytest.fixture
def served(primary, backup, write_config, serve):
    path = write_config(two_route_config(primary, backup, feature_extra=INVOKE_FEATURE + """
guard: {pii: {input: redact}}
retention: {store_content: redacted}
"""))
    s = serve(path)
    s.path = path
    return s


def traces(path, n: int) -> list[dict]:
    store = Store(f"sqlite:///{path.parent}/traces.db")
    deadline = time.monotonic() + 10
    while store.count_traces() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = [store.get_trace(r["trace_id"]) for r in store.list_traces(limit=100)]
    store.close()
    return rows


def chat(served, body: bytes | dict, **headers: str) -> httpx.Response:
    url = f"{served.base_url}/v1/chat/completions"
    if isinstance(body, dict):
        return httpx.post(url, json=body, headers=headers, timeout=30)
    return httpx.post(url, content=body, headers={"content-type": "application/json", **headers}, timeout=30)


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,                     # nested far past any parser's depth
    b'{"model": "triage", "messages": ' + b"[" * 5000,  # nested and truncated
    os.urandom(4096),                                     # binary garbage
    b'{"model": "triage", "messages": [{"role": "user", "content": "caf\xe9"}]}',  # not UTF-8
    b"",
])
def test_unparseable_bodies_are_a_400_that_says_so(served, body):
    r = chat(served, body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text
    assert "Traceback" not in r.text


def test_valid_json_nested_too_deep_is_refused_and_moderate_nesting_is_served(served, primary):
    deep = "[" * 900 + '"write to ana@example.com"' + "]" * 900
    body = ('{"model": "triage", "messages": [{"role": "user", "content": "hi", "metadata": ' + deep + "}]}").encode()
    r = chat(served, body)
    assert r.status_code == 400 and "nested deeper than 128 levels" in r.json()["error"]["message"], r.text
    invoke = httpx.post(f"{served.base_url}/v1/features/triage/invoke",
                        content=('{"input": {"text": "hello", "extra": ' + deep + "}}").encode(), timeout=30)
    assert invoke.status_code == 400 and invoke.json()["error"]["code"] == "invalid_json"
    fine = "[" * 100 + '"write to ana@example.com"' + "]" * 100
    invoke = httpx.post(f"{served.base_url}/v1/features/triage/invoke",
                        content=('{"input": {"text": "hello", "extra": ' + fine + "}}").encode(), timeout=30)
    assert invoke.status_code == 200, invoke.text
    [row] = traces(served.path, 1)
    assert "ana@example.com" not in str(row) and "[EMAIL]" in str(row["content"])


def test_nul_bytes_lone_surrogates_and_mixed_scripts_are_served_and_stored(served, primary):
    primary.script(Reply("ok"))
    content = "Привет\x00 مرحبا 你好 pay 4111\u200b1111\u200b1111\u200b1111 ｍａｉｌ ａｎａ＠ｅｘａｍｐｌｅ.ｃｏｍ"
    r = chat(served, {"model": "triage", "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    lone = chat(served, b'{"model": "triage", "messages": [{"role": "user", "content": "a \\ud800 b"}]}')
    assert lone.status_code in (200, 400) and "Traceback" not in lone.text  # a lone surrogate escape
    sent = primary.requests[-1].body["messages"][0]["content"]
    assert "[CARD]" in sent and "[EMAIL]" in sent and "Привет" in sent and "你好" in sent
    [row] = traces(served.path, 1)
    assert row["status"] == "ok" and "4111" not in str(row["content"])


def test_a_huge_message_is_handled_within_the_body_limit(served, primary):
    primary.script(Reply("ok"))
    # 900 kB: under the fake provider's 1 MB request limit (ours is server.max_body_mb, 16 MB)
    text = ("lorem ipsum dolor sit amet 12345 " * 30_000)[:900_000] + " reach me at bob@example.com"
    r = chat(served, {"model": "triage", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text[:500]
    assert primary.requests[-1].body["messages"][0]["content"].endswith("[EMAIL]")
