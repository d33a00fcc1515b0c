"""examples/support-triage: its shipped config, served for real, with the remote APIs down or up.

The example's shipyard.yaml is used as-is except for two lines: storage goes to the test's folder, and
the local provider's ``path: "."`` becomes the example folder's absolute path (the config file itself is
written into tmp_path). PRIMARY_BASE_URL / BACKUP_BASE_URL point at ports that refuse connections.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import FakeUpstream, Reply

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support-triage"
CATEGORIES = {"billing", "technical", "account", "other"}
LOCAL_TRIAGE = "local/triage-classifier"
LOCAL_INTENT = "local/intent-classifier"

# Fresh messages (in neither CSV file) whose category no reasonable triage could get wrong.
CLEAR = [
    ("Hello, my credit card was billed two times for the same monthly plan, I want a refund.", "billing"),
    ("Please send me the invoice for last month, our accountant needs it for the tax return.", "billing"),
    ("The app shows an error 500 and crashes whenever I try to upload a document.", "technical"),
    ("Your API has been returning timeouts since this morning and our integration is broken.", "technical"),
]


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the example config no longer has exactly one {old!r}"
    return text.replace(old, new)


@pytest.fixture
def refused_url() -> Iterator[Any]:
    """URLs of 127.0.0.1 ports that are bound but not listening: connecting is refused at once, and no
    other server can take the port while the test runs."""
    held: list[socket.socket] = []

    def make() -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"

    yield make
    for s in held:
        s.close()


@pytest.fixture
def example_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_url: Any) -> Path:
    text = (EXAMPLE / "shipyard.yaml").read_text(encoding="utf-8")
    text = _replace_once(text, "storage: sqlite:///shipyard.db", f"storage: sqlite:///{tmp_path}/traces.db")
    text = _replace_once(text, '\n    path: "."\n', f"\n    path: {json.dumps(str(EXAMPLE))}\n")
    monkeypatch.setenv("PRIMARY_BASE_URL", refused_url())
    monkeypatch.setenv("BACKUP_BASE_URL", refused_url())
    monkeypatch.delenv("PRIMARY_API_KEY", raising=False)
    path = tmp_path / "shipyard.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def invoke(base_url: str, feature: str, payload: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/features/{feature}/invoke", json={"input": payload}, timeout=30)


def test_support_triage_answers_from_the_local_model_when_the_apis_are_down(example_config, serve):
    client = serve(example_config).client()
    for message, category in CLEAR:
        raw = client.chat.completions.with_raw_response.create(
            model="support-triage", messages=[{"role": "user", "content": message}]
        )
        assert raw.headers["x-shipyard-route"] == LOCAL_TRIAGE
        assert raw.headers["x-shipyard-trace-id"]
        reply = raw.parse().choices[0].message.content
        queue = {"billing": "Billing", "technical": "Technical Support"}[category]
        assert reply.startswith(f"Routed to {queue} (category: {category}, confidence "), (message, reply)


def test_support_triage_streams_from_the_local_model(example_config, serve):
    client = serve(example_config).client()
    raw = client.chat.completions.with_raw_response.create(
        model="support-triage", messages=[{"role": "user", "content": CLEAR[2][0]}], stream=True
    )
    assert raw.headers["x-shipyard-route"] == LOCAL_TRIAGE
    with raw.parse() as stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("Routed to Technical Support (category: technical")


def test_extract_intent_classifies_through_the_local_route(example_config, serve):
    served = serve(example_config)
    for message, category in CLEAR:
        resp = invoke(served.base_url, "extract-intent", {"text": message})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["route"] == LOCAL_INTENT == resp.headers["x-shipyard-route"]
        assert body["output"] == {"category": category}, message
    # The input contract still applies in front of the local model.
    resp = invoke(served.base_url, "extract-intent", {"text": ""})
    assert resp.status_code == 422, resp.text


def test_the_primary_api_serves_when_it_answers(
    example_config: Path, serve: Any, primary: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIMARY_BASE_URL", primary.url)
    served = serve(example_config)
    reply = "Thanks! Our billing team will refund the duplicate charge."
    primary.script(Reply(reply))
    raw = served.client().chat.completions.with_raw_response.create(
        model="support-triage", messages=[{"role": "user", "content": CLEAR[0][0]}]
    )
    assert raw.headers["x-shipyard-route"] == "primary/gpt-4o-mini"
    assert raw.parse().choices[0].message.content == reply

    primary.script(Reply('{"category": "technical"}'))
    resp = invoke(served.base_url, "extract-intent", {"text": "the export button does nothing"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["route"] == "primary/gpt-4o-mini"
    assert resp.json()["output"] == {"category": "technical"}
    sent = primary.requests[-1].body
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][-1] == {"role": "user", "content": "the export button does nothing"}


def read_tickets(name: str) -> list[tuple[str, str]]:
    with open(EXAMPLE / name, newline="", encoding="utf-8") as f:
        return [(row["text"], row["category"]) for row in csv.DictReader(f)]


def test_the_shipped_classifier_is_accurate_on_held_out_tickets(monkeypatch):
    train, holdout = read_tickets("tickets.csv"), read_tickets("tickets_holdout.csv")
    # The check means something only if the held-out tickets are many, balanced and unseen.
    assert len(train) >= 400 and len(holdout) >= 60
    assert {c for _, c in train} == {c for _, c in holdout} == CATEGORIES
    assert not {t.strip().lower() for t, _ in train} & {t.strip().lower() for t, _ in holdout}

    monkeypatch.syspath_prepend(str(EXAMPLE))
    triage_model = importlib.import_module("triage_model")
    right = 0
    for text, category in holdout:
        request = {"model": "intent-classifier", "messages": [{"role": "user", "content": text}]}
        answer = json.loads(triage_model.answer(request))
        assert answer["category"] in CATEGORIES
        right += answer["category"] == category
    accuracy = right / len(holdout)
    assert accuracy >= 0.8, f"held-out accuracy {accuracy:.3f}"
    assert triage_model.holdout_accuracy() == pytest.approx(accuracy)


def test_the_poc_script_runs_against_the_gateway(example_config, serve):
    served = serve(example_config)
    env = {**os.environ, "SHIPYARD_URL": served.base_url}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE / "poc.py")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(f"route:    {LOCAL_TRIAGE}") == 4  # three plain calls and the streamed one
    assert f"route:    {LOCAL_INTENT}" in done.stdout
    assert "trace id: " in done.stdout


def test_the_poc_script_says_when_no_gateway_runs(refused_url):
    env = {**os.environ, "SHIPYARD_URL": refused_url()}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE / "poc.py")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "no Shipyard gateway answers" in done.stderr
