"""Retention and erasure end to end: no raw PII on disk with the default settings (a real `shipyard serve`,
its database files and its logs scanned byte by byte), subjects erased by CLI and admin API, the
scheduled purge, encrypted content."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from typer.testing import CliRunner

from shipyard import Gateway, load_config
from shipyard.cli import app
from shipyard.errors import ConfigError
from shipyard.store import Store
from shipyard.store.content import new_key, subject_digest
from tests.conftest import free_port, two_route_config
from tests.fakes import Fail, Reply, Stream

EMAIL = "maria.gonzalez@example.com"
CARD, CARD_COMPACT = "4111 1111 1111 1111", "4111111111111111"
IBAN, IBAN_COMPACT = "GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"
PHONE = "+44 20 7946 0958"
IP = "203.0.113.77"
ANSWER_CARD = "5500 0000 0000 0004"
PLANTED = [EMAIL, CARD, CARD_COMPACT, IBAN, IBAN_COMPACT, PHONE, IP, ANSWER_CARD, ANSWER_CARD.replace(" ", "")]
PROMPT = f"Hi, I'm writing from {EMAIL} (phone {PHONE}, IP {IP}). Card {CARD}, IBAN {IBAN}. Refund please."


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


class Served:
    """One real `shipyard serve` process whose stdout and stderr go to a log file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = log.open("w")
        full_env = {**{k: v for k, v in os.environ.items() if k != "SHIPYARD_CONFIG"}, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard", "serve", "--config", str(config), "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("the server did not start: " + log.read_text())
            time.sleep(0.05)
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """A clean stop (SIGINT, as Ctrl-C): every pending trace is written first."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def written(path: Path, n: int) -> Store:
    """The test's trace store, once ``n`` traces have reached it (the writer batches off the request path)."""
    store = Store(f"sqlite:///{path.parent}/traces.db")
    store.migrate()
    deadline = time.monotonic() + 10
    while store.count_traces() < n:
        assert time.monotonic() < deadline, f"{store.count_traces()} of {n} traces written"
        time.sleep(0.05)
    return store


def scan(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every file under ``folder`` that holds one of ``needles`` (raw bytes: database pages, WAL, logs)."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[path.name] = hits
    return found


@pytest.mark.parametrize("retention", ["", "retention: {store_content: redacted}"])
def test_no_raw_pii_reaches_disk_by_default_or_with_redacted_content(primary, backup, write_config, tmp_path,
                                                                     retention):
    path = write_config(two_route_config(primary, backup, extra=retention))
    assert "guard" not in path.read_text()  # no PII guard: the provider sees the data, the disk never
    primary.script(
        Reply(f"Thanks Maria, I wrote to {EMAIL} and refunded card {ANSWER_CARD}."),
        Stream(["Done: mail sent to maria.gon", "zalez@example.com, card ", ANSWER_CARD, "."]),
        Fail(400, message=f"invalid 'user' field: {EMAIL} (card {CARD})"),
        Reply("ok"),
    )
    served = Served(path, tmp_path / "server.log")
    try:
        messages = [{"role": "user", "content": PROMPT}]
        first = served.client.chat.completions.create(model="triage", messages=messages, user=EMAIL)
        assert EMAIL in first.choices[0].message.content  # the client gets its answer untouched
        streamed = served.client.chat.completions.create(model="triage", messages=messages, stream=True,
                                                         extra_headers={"x-shipyard-subject": EMAIL})
        assert EMAIL in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        with pytest.raises(openai.BadRequestError):
            served.client.chat.completions.create(model="triage", messages=messages)
    finally:
        served.stop()
    assert scan(tmp_path, PLANTED) == {}
    store = Store(f"sqlite:///{tmp_path}/traces.db")
    rows = [store.get_trace(r["trace_id"]) for r in store.list_traces(limit=10)]
    store.close()
    assert len(rows) == 3 and {r["subject"] for r in rows} == {subject_digest(EMAIL), None}
    stored = orjson.dumps(rows).decode()
    assert "[EMAIL]" in stored  # the provider error that quoted the email, redacted
    if not retention:  # the default keeps no prompt or answer at all
        assert all(r["content"] is None for r in rows)
    else:
        assert all(r["content_mode"] == "redacted" for r in rows)
        assert "[CARD]" in stored and "Refund please" in stored  # kept, redacted


def test_forget_erases_a_subject_sent_by_header_user_field_or_invoke_field(primary, backup, write_config, serve):
    path = write_config(two_route_config(primary, backup))
    served = serve(path)
    client = served.client()
    client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "a"}], user="cust-42")
    client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "b"}],
                                   extra_headers={"X-Shipyard-Subject": "cust-42"})
    client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "c"}], user="cust-7")
    client.chat.completions.create(model="triage", messages=[{"role": "user", "content": "d"}])
    store = written(path, 4)
    assert cli("forget", "--config", path, "--subject", "cust-42", "--dry-run").stdout.startswith("2 trace(s)")
    done = cli("forget", "--config", path, "--subject", "cust-42")
    assert "erased 2 trace(s)" in done.stdout
    assert store.count_traces() == 2 and store.count_subject("cust-7") == 1
    [entry] = [e for e in store.audit.export() if e["action"] == "subject.erased"]
    assert entry["actor"] == f"cli:{getpass.getuser()}" and entry["details"] == {"traces": 2, "online_scores": 0}
    # over HTTP, with the admin API (auth: none here: the actor is "open")
    gone = httpx.delete(f"{served.base_url}/v1/admin/subjects/cust-7")
    assert gone.status_code == 200 and gone.json()["traces"] == 1
    assert store.count_traces() == 1 and store.audit.verify() is None
    store.close()


def test_invoke_takes_a_subject_field_and_refuses_a_bad_one(primary, backup, write_config, serve):
    path = write_config(two_route_config(primary, backup, feature_extra="""
        prompt: [{role: user, content: "{{ text }}"}]
    """))
    served = serve(path)
    ok = httpx.post(f"{served.base_url}/v1/features/triage/invoke", json={"input": {"text": "x"}, "subject": "s-1"})
    assert ok.status_code == 200, ok.text
    bad = httpx.post(f"{served.base_url}/v1/features/triage/invoke", json={"input": {"text": "x"}, "subject": 7})
    assert bad.status_code == 400 and "'subject' must be a non-empty string" in bad.json()["error"]["message"]
    store = written(path, 1)  # a malformed request never becomes a call
    assert "erased 1 trace(s)" in cli("forget", "--config", path, "--subject", "s-1").stdout
    assert store.count_traces() == 0
    store.close()


async def test_the_server_purges_expired_traces_on_its_schedule(primary, backup, write_config):
    path = write_config(two_route_config(primary, backup, extra="server: {purge_interval_s: 0.2}",
                                         feature_extra="retention: {traces_days: 1}"))
    old = {"trace_id": "e" * 32, "feature": "triage", "op": "chat", "stream": False, "status": "ok", "started_at": time.time() - 3 * 86400,
           "latency_ms": 1.0, "attempts": [], "events": []}
    gw = Gateway.from_config(path)
    gw.jobs = True  # as the server does
    async with gw:
        gw.store.insert_traces([old])
        fresh = await gw.chat("triage", [{"role": "user", "content": "hi"}])
        deadline = time.monotonic() + 10
        while await gw.get_trace("e" * 32) is not None:
            assert time.monotonic() < deadline, "the scheduled purge did not run"
            await asyncio.sleep(0.05)
        assert await gw.get_trace(fresh.trace_id) is not None
    entries = [e for e in gw.store.audit.export() if e["action"] == "retention.purged"]
    assert entries[0]["details"] == {"deleted": {"triage": 1}, "total": 1, "eval_rows": 0}
    assert entries[0]["actor"].startswith("gateway:")


def test_retention_run_purges_once_from_the_cli(primary, backup, write_config):
    path = write_config(two_route_config(primary, backup, feature_extra="retention: {traces_days: 0.5}"))
    store = Store(f"sqlite:///{path.parent}/traces.db")
    store.migrate()
    store.insert_traces([{"trace_id": f"{i:032x}", "feature": "triage", "op": "chat", "stream": False, "status": "ok",
                          "started_at": time.time() - i * 86400, "latency_ms": 1.0, "attempts": [], "events": []}
                         for i in range(3)])
    result = cli("retention", "run", "--config", path)
    assert "triage: 2 trace(s) deleted" in result.stdout and "purged 2 expired trace(s)" in result.stdout
    assert store.count_traces() == 1
    store.close()


def test_encrypted_content_needs_its_key_and_decrypting_is_audited(primary, backup, write_config, monkeypatch):
    path = write_config(two_route_config(primary, backup, feature_extra="retention: {store_content: encrypted}"))
    monkeypatch.delenv("SHIPYARD_CONTENT_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        Gateway(load_config(path))
    assert "SHIPYARD_CONTENT_KEY" in info.value.message and "shipyard retention keygen" in info.value.message
    assert "features.triage.retention" in info.value.message
    key = cli("retention", "keygen").stdout.strip()
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", key)
    primary.script(Reply(f"Refund sent to {EMAIL}"))
    result = cli("check", "--config", path)  # a valid config once the key is set
    assert result.exit_code == 0

    async def call() -> str:
        async with Gateway.from_config(path) as gw:
            return (await gw.chat("triage", [{"role": "user", "content": PROMPT}], subject="s-9")).trace_id

    trace_id = asyncio.run(call())
    db = (path.parent / "traces.db").read_bytes() + (path.parent / "traces.db-wal").read_bytes() \
        if (path.parent / "traces.db-wal").exists() else (path.parent / "traces.db").read_bytes()
    assert EMAIL.encode() not in db and b"Refund please" not in db  # nothing readable, not even the prose
    shown = orjson.loads(cli("trace", trace_id, "--config", path, "--json").stdout)
    assert shown["content"]["encrypted"] is True
    opened = orjson.loads(cli("trace", trace_id, "--config", path, "--json", "--decrypt").stdout)
    assert opened["content"]["messages"][0]["content"] == PROMPT and EMAIL in opened["content"]["answer"]
    store = Store(f"sqlite:///{path.parent}/traces.db")
    [entry] = [e for e in store.audit.export() if e["action"] == "content.decrypted"]
    assert entry["target"] == trace_id
    store.close()
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", new_key())
    wrong = cli("trace", trace_id, "--config", path, "--decrypt", code=2)
    assert "not among the keys given" in wrong.stderr
