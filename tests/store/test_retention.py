"""Retention and erasure in the store: sealing content (redacted, encrypted), purging per feature,
forgetting a subject, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import base64
import time

import orjson
import pytest

from shipyard.config import RetentionSpec, parse_config
from shipyard.store import Store, retention
from shipyard.store.content import ContentKeyError, Sealer, new_key, parse_keys, subject_digest
from tests.store.test_store import postgres_url, record, store_url  # noqa: F401 - fixtures

EMAIL = "jane.roe@example.org"
CARD = "4111 1111 1111 1111"
CONTENT = {"messages": [{"role": "user", "content": f"I am {EMAIL}, card {CARD}"}], "answer": f"Noted, {EMAIL}."}


def parse_retention(**fields) -> RetentionSpec:
    return RetentionSpec.model_validate(fields)


def traced(i: int, feature: str, *, age_days: float = 0.0, subject: str | None = None, mode: str = "redacted",
           content=CONTENT) -> dict:
    rec = record(i, feature)
    rec.update(started_at=time.time() - age_days * 86400, subject=subject, content=content, content_mode=mode)
    return rec


def config(retention_yaml: str = "", feature_retention: str = ""):
    text = f"""
providers:
  p: {{kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  short:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
    retention: {{traces_days: 1}}
  forever:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
    retention: {{traces_days: null}}
  default:
    owners: {{incidents: a, changes: b, evaluation: c, risk: d}}
    route: [{{provider: p, model: m}}]
{retention_yaml}
"""
    return parse_config(text).model


@pytest.fixture
def store(store_url):  # noqa: F811
    s = Store(store_url)
    s.migrate()
    with s.engine.begin() as conn:  # the PostgreSQL database is shared by the session's tests
        for table in ("trace_attempts", "traces", "audit_log"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    yield s
    s.close()


def test_redacted_content_keeps_no_entity_and_reads_back(store):
    store.insert_traces([traced(1, "default")])
    got = store.get_trace(f"{1:032x}")
    text = orjson.dumps(got["content"]).decode()
    assert got["content_mode"] == "redacted" and EMAIL not in text and "4111" not in text
    assert got["content"]["messages"][0]["content"] == "I am [EMAIL], card [CARD]"
    assert "content" not in store.list_traces()[0]  # listings stay small


def test_errors_and_events_are_redacted_whatever_the_mode(store):
    rec = traced(2, "default", mode="none", content=None)
    rec["error_message"] = f"provider said: bad value {EMAIL}"
    rec["events"] = [{"kind": "output_contract_failed", "problems": [{"path": "$.n", "message": f"'{EMAIL}' is not"}]}]
    rec["attempts"][0]["error_message"] = f"400: {CARD} rejected"
    store.insert_traces([rec])
    got = store.get_trace(f"{2:032x}")
    dumped = orjson.dumps(got).decode()
    assert EMAIL not in dumped and "4111" not in dumped and "[EMAIL]" in got["error_message"]
    assert got["content"] is None and got["content_mode"] is None


def test_encrypted_content_opens_only_with_its_key_and_its_trace(store, monkeypatch):
    key = new_key()
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", key)
    store.insert_traces([traced(3, "default", mode="encrypted")])
    got = store.get_trace(f"{3:032x}")
    assert got["content"] == {"encrypted": True, "key_id": got["content"]["key_id"]}
    assert store.get_trace(f"{3:032x}", decrypt=True)["content"] == CONTENT
    # rotation: a new key first, the old one still opens what it sealed
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", f"{new_key()},{key}")
    rotated = Store(store.url)
    assert rotated.get_trace(f"{3:032x}", decrypt=True)["content"] == CONTENT
    rotated.close()
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", new_key())
    stranger = Store(store.url)
    with pytest.raises(ContentKeyError, match="not among the keys given"):
        stranger.get_trace(f"{3:032x}", decrypt=True)
    stranger.close()


def test_a_sealed_blob_moved_to_another_trace_does_not_open():
    sealer = Sealer(parse_keys(new_key(), "K"))
    blob = sealer.seal(CONTENT, "encrypted", "a" * 32)
    assert EMAIL not in blob and sealer.open(blob, "a" * 32) == CONTENT
    with pytest.raises(ContentKeyError, match="does not open"):
        sealer.open(blob, "b" * 32)


@pytest.mark.parametrize("raw", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_bad_keys_say_how_to_make_a_good_one(raw):
    with pytest.raises(ContentKeyError, match="shipyard retention keygen"):
        Sealer.from_env("NO_SUCH_VAR_X", required=True) if not raw else parse_keys(raw, "K")


def test_purge_follows_each_features_retention_and_is_audited(store):
    rows = [traced(1, "short", age_days=2), traced(2, "short", age_days=0.5), traced(3, "forever", age_days=4000),
            traced(4, "default", age_days=91), traced(5, "default", age_days=89), traced(6, "gone", age_days=91),
            traced(7, "gone", age_days=1)]
    store.insert_traces(rows)
    deleted = retention.purge(store, config("retention: {purge_unknown_features: true}"), "test")
    assert deleted == {"short": 1, "default": 1, "gone": 1}
    left = {r["trace_id"] for r in store.list_traces(limit=100)}
    assert left == {f"{i:032x}" for i in (2, 3, 5, 7)}
    assert store.get_trace(f"{1:032x}") is None
    [entry] = [e for e in store.audit.export() if e["action"] == "retention.purged"]
    assert entry["details"] == {"deleted": {"short": 1, "default": 1, "gone": 1}, "total": 3, "eval_rows": 0}
    assert retention.purge(store, config(), "test") == {}  # nothing more: no second audit entry
    assert sum(e["action"] == "retention.purged" for e in store.audit.export()) == 1


def test_features_this_config_does_not_name_are_left_alone_unless_asked(store):
    store.insert_traces([traced(1, "gone", age_days=5000), traced(2, "short", age_days=3)])
    assert retention.purge(store, config(), "test") == {"short": 1}  # another service's feature, perhaps
    assert retention.purge(store, config("retention: {traces_days: null, purge_unknown_features: true}"),
                           "test") == {}
    assert store.get_trace(f"{1:032x}") is not None


def test_a_features_retention_inherits_what_it_does_not_set():
    model = config("retention: {traces_days: 7, key_env: MY_KEY}")
    model = model.model_copy(update={"features": {**model.features, "default": model.features["default"]
                                                  .model_copy(update={"retention": parse_retention(store_content="none")})}})
    merged = model.retention_of("default")
    assert (merged.traces_days, merged.store_content, merged.key_env) == (7, "none", "MY_KEY")
    assert model.retention_of("short").traces_days == 1 and model.retention_of("short").key_env == "MY_KEY"


def test_forget_erases_one_subject_everywhere_and_audits_its_digest(store):
    store.insert_traces([traced(1, "short", subject="cust-42"), traced(2, "default", subject="cust-42"),
                         traced(3, "default", subject="cust-7"), traced(4, "default")])
    assert store.count_subject("cust-42") == 2
    done = retention.forget(store, "cust-42", "cli:ana")
    assert done["traces"] == 2 and done["subject"] == subject_digest("cust-42")
    assert {r["trace_id"] for r in store.list_traces(limit=10)} == {f"{3:032x}", f"{4:032x}"}
    assert store.count_subject("cust-42") == 0 and store.count_subject("cust-7") == 1
    [entry] = [e for e in store.audit.export() if e["action"] == "subject.erased"]
    assert entry["actor"] == "cli:ana" and entry["target"] == subject_digest("cust-42")
    assert "cust-42" not in orjson.dumps(list(store.audit.export())).decode()
    assert store.audit.verify() is None


def test_the_subject_id_never_reaches_the_table(store):
    store.insert_traces([traced(1, "default", subject=EMAIL)])
    assert store.get_trace(f"{1:032x}")["subject"] == subject_digest(EMAIL) != EMAIL


def test_a_malformed_key_loses_no_trace_when_nothing_encrypts(store, monkeypatch):
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", "not-a-key")
    assert store.insert_traces([traced(1, "default")]) == 1
    assert store.get_trace(f"{1:032x}")["content"]["answer"] == "Noted, [EMAIL]."


def test_content_that_is_not_json_is_stored_as_text_and_a_failed_seal_keeps_the_trace(store, monkeypatch):
    store.insert_traces([traced(1, "default", content={"input": {"tags": {"a"}, "raw": b"bytes"}})])
    assert store.get_trace(f"{1:032x}")["content"]["input"]["tags"] == "{'a'}"
    monkeypatch.delenv("SHIPYARD_CONTENT_KEY", raising=False)
    fresh = Store(store.url)
    assert fresh.insert_traces([traced(2, "default", mode="encrypted")]) == 1  # no key: kept, without content
    got = fresh.get_trace(f"{2:032x}")
    assert got["content"] is None and got["status"] == "ok"
    fresh.close()


def test_a_damaged_blob_is_a_clear_error(store, monkeypatch):
    monkeypatch.setenv("SHIPYARD_CONTENT_KEY", new_key())
    sealer = Sealer.from_env("SHIPYARD_CONTENT_KEY", required=True)
    blob = sealer.seal(CONTENT, "encrypted", "t")
    with pytest.raises(ContentKeyError, match="does not open"):
        sealer.open(blob[:-7] + "!!!", "t")


def test_subject_digests_are_keyed_when_a_key_is_set(monkeypatch):
    plain = subject_digest("ana@example.com")
    monkeypatch.setenv("SHIPYARD_SUBJECT_KEY", "k1")
    keyed = subject_digest("ana@example.com")
    monkeypatch.setenv("SHIPYARD_SUBJECT_KEY", "k2")
    assert len({plain, keyed, subject_digest("ana@example.com")}) == 3
