"""API keys over HTTP: 401 for every way a key can be wrong, 403 for a feature it may not use, models
and traces filtered by key, ``auth: none``, and what a call costs (header and trace)."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import openai
import pytest
import sqlalchemy as sa

from shipyard.access import KeyRing
from shipyard.errors import Unauthenticated
from shipyard.store import Store
from tests.conftest import OWNERS
from tests.fakes import Reply, Stream

MSG = [{"role": "user", "content": "my invoice is wrong"}]
PRICE_IN, PRICE_OUT = 0.15, 0.60  # USD per million tokens, primary/gpt-4o-mini in the config below


def keyed_config(primary, backup, auth: str = "keys") -> str:
    """Two features on two providers; only the primary's model is priced (by the config)."""
    return f"""
    auth: {auth}
    pricing:
      primary/gpt-4o-mini: {{input: {PRICE_IN}, output: {PRICE_OUT}}}
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: sk-primary}}
      backup: {{kind: openai, base_url: "{backup.url}", api_key: none}}
    features:
      triage:
        owners: {OWNERS}
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 2}}
      summarize:
        owners: {OWNERS}
        route:
          - {{provider: backup, model: small-model, timeout_s: 2}}
    """


@pytest.fixture
def served(primary, backup, write_config, serve):
    return serve(write_config(keyed_config(primary, backup)))


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _clients:
        _clients.pop().close()


def sdk(served, key: str) -> openai.OpenAI:
    """An SDK client sending ``key``; closed at the end of the test."""
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=key, max_retries=0)
    _clients.append(client)
    return client


def chat(served, key: str, feature: str = "triage"):
    """A chat call with the SDK; the raw response (headers) and the parsed completion."""
    raw = sdk(served, key).chat.completions.with_raw_response.create(model=feature, messages=MSG)
    return raw, raw.parse()


def get_trace(served, trace_id: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{served.base_url}/v1/traces/{trace_id}", headers=headers, timeout=10)


def refused(served, key: str, feature: str = "triage") -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(served, key).chat.completions.create(model=feature, messages=MSG)
    return caught.value


# -- 401 ----------------------------------------------------------------------------------------------


def test_a_valid_key_is_served_and_its_call_is_counted_for_its_tenant(served):
    key, row = served.gateway.keys.create("acme")
    raw, completion = chat(served, key)
    assert completion.choices[0].message.content == "hello from the fake"
    admin, _ = served.gateway.keys.create("ops", role="admin")
    record = get_trace(served, raw.headers["x-shipyard-trace-id"], admin).json()
    assert record["tenant"] == "acme" and record["key_id"] == row["key_id"]


def test_no_key_is_401_with_how_to_send_one(served, primary):
    r = httpx.post(f"{served.base_url}/v1/chat/completions", json={"model": "triage", "messages": MSG}, timeout=10)
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert "no API key" in error["message"] and "Authorization: Bearer" in error["message"]
    assert error["trace_id"] == r.headers["x-shipyard-trace-id"]
    client = sdk(served, "unsent")
    with pytest.raises(openai.AuthenticationError, match="no API key"):
        client.chat.completions.create(model="triage", messages=MSG, extra_headers={"Authorization": openai.Omit()})
    with pytest.raises(openai.AuthenticationError, match="no API key"):  # a blank bearer token
        client.chat.completions.create(model="triage", messages=MSG, extra_headers={"Authorization": "Bearer"})
    assert primary.requests == []  # refused before any provider was asked


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("sk-not-ours", "not a Shipyard key"),
        ("shp_", "not a Shipyard key"),
        ("shp_abc", "not a Shipyard key"),
        ("shp__secret", "not a Shipyard key"),
        ("shp_0123456789ab_nosuchsecret", "not valid (unknown key, or a wrong secret)"),
    ],
)
def test_a_malformed_or_unknown_key_is_401(served, key, says):
    exc = refused(served, key)
    assert isinstance(exc, openai.AuthenticationError)
    assert exc.status_code == 401 and says in exc.message


def test_a_wrong_secret_is_401_and_does_not_say_which_part_was_wrong(served):
    key, row = served.gateway.keys.create("acme")
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    exc = refused(served, wrong)
    assert isinstance(exc, openai.AuthenticationError)
    assert "not valid (unknown key, or a wrong secret)" in exc.message
    assert row["key_id"] not in exc.message  # a guesser learns nothing about the id
    chat(served, key)  # the right one still works


def test_a_revoked_key_is_refused_at_once_on_the_replica_that_revoked_it(served):
    key, row = served.gateway.keys.create("acme")
    chat(served, key)  # verified, and remembered for ttl_s
    assert served.gateway.keys.revoke(row["key_id"]) is True
    exc = refused(served, key)
    assert isinstance(exc, openai.AuthenticationError)
    assert f"API key {row['key_id']} was revoked at" in exc.message
    assert served.gateway.keys.revoke("000000000000") is False


def test_an_expired_key_is_401_saying_when_it_expired(served):
    keys = served.gateway.keys
    now = time.time()
    keys.clock = lambda: now
    key, row = keys.create("acme", expires_in_s=5)
    chat(served, key)  # valid, and remembered for 10 s
    keys.clock = lambda: now + 6  # within the remembered 10 s: the expiry is still checked
    exc = refused(served, key)
    assert isinstance(exc, openai.AuthenticationError)
    assert f"API key {row['key_id']} expired at" in exc.message and "create a new one" in exc.message
    keys.clock = lambda: now + 60  # looked up afresh in the store
    assert f"API key {row['key_id']} expired at" in refused(served, key).message


def test_x_api_key_header_is_accepted_too(served):
    key, _ = served.gateway.keys.create("acme")
    r = httpx.post(f"{served.base_url}/v1/chat/completions", json={"model": "triage", "messages": MSG},
                   headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 200, r.text


# -- 403, models ------------------------------------------------------------------------------------


def test_a_feature_outside_the_keys_features_is_403(served, backup):
    key, row = served.gateway.keys.create("acme", features=["triage"])
    chat(served, key, "triage")
    exc = refused(served, key, "summarize")
    assert isinstance(exc, openai.PermissionDeniedError)
    assert exc.status_code == 403 and exc.code == "forbidden"
    assert f"API key {row['key_id']} (tenant acme) may not use feature 'summarize'" in exc.message
    assert "it may use: triage" in exc.message
    assert backup.requests == []


def test_models_lists_only_the_features_a_key_may_use(served):
    narrow, _ = served.gateway.keys.create("acme", features=["summarize"])
    wide, _ = served.gateway.keys.create("acme")
    assert [m.id for m in sdk(served, narrow).models.list()] == ["summarize"]
    assert sorted(m.id for m in sdk(served, wide).models.list()) == ["summarize", "triage"]
    with pytest.raises(openai.AuthenticationError):
        sdk(served, "shp_nope_nope").models.list()
    r = httpx.get(f"{served.base_url}/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


# -- traces -----------------------------------------------------------------------------------------


def test_a_trace_is_for_admins_and_owners_of_its_tenant(served):
    keys = served.gateway.keys
    app_key, app_row = keys.create("acme")
    raw, _ = chat(served, app_key)
    trace_id = raw.headers["x-shipyard-trace-id"]

    r = get_trace(served, trace_id, app_key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "role admin or owner" in r.json()["error"]["message"]

    admin, _ = keys.create("ops", role="admin")
    r = get_trace(served, trace_id, admin)
    assert r.status_code == 200 and r.json()["trace_id"] == trace_id and r.json()["key_id"] == app_row["key_id"]

    owner, _ = keys.create("acme", role="owner")
    assert get_trace(served, trace_id, owner).status_code == 200

    stranger, _ = keys.create("globex", role="owner")
    r = get_trace(served, trace_id, stranger)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"  # not even told it exists

    assert get_trace(served, trace_id, None).status_code == 401
    assert get_trace(served, "0" * 32, admin).status_code == 404


# -- auth: none -------------------------------------------------------------------------------------


def test_auth_none_serves_without_a_key(primary, backup, write_config, serve):
    served = serve(write_config(keyed_config(primary, backup, auth="none")))
    raw, completion = chat(served, "anything")
    assert completion.choices[0].message.content == "hello from the fake"
    r = httpx.post(f"{served.base_url}/v1/chat/completions", json={"model": "triage", "messages": MSG}, timeout=10)
    assert r.status_code == 200, r.text
    assert sorted(m.id for m in sdk(served, "x").models.list()) == ["summarize", "triage"]
    record = get_trace(served, raw.headers["x-shipyard-trace-id"], None).json()
    assert record["tenant"] == "default" and record["key_id"] is None


# -- cost -------------------------------------------------------------------------------------------


def test_a_priced_call_reports_its_cost_in_a_header_and_its_trace(served, primary):
    key, row = served.gateway.keys.create("acme")
    primary.script(Reply("ok", usage={"prompt_tokens": 1200, "completion_tokens": 345, "total_tokens": 1545}))
    raw, _ = chat(served, key)
    expected = 1200 * PRICE_IN / 1e6 + 345 * PRICE_OUT / 1e6  # 0.000387
    assert float(raw.headers["x-shipyard-cost-usd"]) == pytest.approx(expected, rel=1e-9)
    assert raw.headers["x-shipyard-cost-usd"] == "0.000387"

    raw, _ = chat(served, key)  # the fake's default usage: 5 prompt, 3 completion tokens
    assert raw.headers["x-shipyard-cost-usd"] == "0.00000255"  # 5 * 0.15e-6 + 3 * 0.60e-6

    admin, _ = served.gateway.keys.create("ops", role="admin")
    record = get_trace(served, raw.headers["x-shipyard-trace-id"], admin).json()
    assert record["cost_usd"] == pytest.approx(2.55e-6, rel=1e-9)
    assert record["cost_estimated"] is False
    assert (record["tenant"], record["key_id"]) == ("acme", row["key_id"])
    assert (record["prompt_tokens"], record["completion_tokens"]) == (5, 3)


def test_an_unpriced_route_has_no_cost(served):
    key, _ = served.gateway.keys.create("acme")
    raw, _ = chat(served, key, "summarize")  # backup/small-model: not in any price table
    assert "x-shipyard-cost-usd" not in raw.headers
    admin, _ = served.gateway.keys.create("ops", role="admin")
    assert get_trace(served, raw.headers["x-shipyard-trace-id"], admin).json()["cost_usd"] is None


def streamed_trace(served, key: str, admin: str) -> dict:
    raw = sdk(served, key).chat.completions.with_raw_response.create(model="triage", messages=MSG, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello!"
    return get_trace(served, raw.headers["x-shipyard-trace-id"], admin).json()


def test_a_stream_without_usage_gets_an_estimated_cost(served, primary):
    key, row = served.gateway.keys.create("acme")
    admin, _ = served.gateway.keys.create("ops", role="admin")

    primary.script(Stream(["Hel", "lo", "!"], include_usage=True))
    counted = streamed_trace(served, key, admin)
    assert counted["cost_estimated"] is False
    assert (counted["prompt_tokens"], counted["completion_tokens"]) == (5, 3)
    assert counted["cost_usd"] == pytest.approx(2.55e-6, rel=1e-9)

    primary.script(Stream(["Hel", "lo", "!"], include_usage=False))
    record = streamed_trace(served, key, admin)
    assert record["status"] == "ok" and record["cost_estimated"] is True
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] > 0
    expected = record["prompt_tokens"] * PRICE_IN / 1e6 + record["completion_tokens"] * PRICE_OUT / 1e6
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9) and record["cost_usd"] > 0
    assert (record["tenant"], record["key_id"]) == ("acme", row["key_id"])


# -- the KeyRing itself -----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/keys.db")
    s.migrate()
    yield s
    s.close()


async def test_keyring_stores_only_a_salted_hash(store):
    ring = KeyRing(store)
    key, row = ring.create("acme", features=["b", "a", "b"], name="billing bot", rpm=10)
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "shp" and key_id == row["key_id"] and len(secret) >= 40
    with store.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT * FROM api_keys")).mappings().one())
    assert not any(secret in str(v) for v in stored.values())
    assert stored["secret_hash"] == hmac.new(bytes.fromhex(stored["salt"]), secret.encode(), hashlib.sha256).hexdigest()
    other, _ = ring.create("acme")
    assert store.get_key(other.split("_", 2)[1])["salt"] != stored["salt"]  # one salt per key

    who = await ring.verify(key)
    assert (who.tenant, who.key_id, who.role, who.features, who.rpm) == ("acme", key_id, "app", {"a", "b"}, 10)
    assert who.may_use("a") and not who.may_use("c")


async def test_keyring_refuses_bad_roles_and_tenants(store):
    ring = KeyRing(store)
    with pytest.raises(ValueError, match="role must be one of app, owner, admin"):
        ring.create("acme", role="root")
    for tenant in ("", "x" * 129, " acme"):
        with pytest.raises(ValueError, match="tenant must be 1-128 characters"):
            ring.create(tenant)
    with pytest.raises(ValueError, match="name must be at most 200 characters"):
        ring.create("acme", name="n" * 201)
    with pytest.raises(ValueError, match="expires_in_s must be positive"):
        ring.create("acme", expires_in_s=0)
    assert store.list_keys() == []
    with pytest.raises(Unauthenticated, match="no API key"):
        await ring.verify(None)


async def test_keyring_expiry_follows_its_clock(store):
    now = [1_000_000.0]
    ring = KeyRing(store, clock=lambda: now[0])
    key, _ = ring.create("acme", expires_in_s=30)
    await ring.verify(key)
    now[0] += 29.9
    await ring.verify(key)
    now[0] += 0.1
    with pytest.raises(Unauthenticated, match="expired at 1970-01-12 13:47:10 UTC"):
        await ring.verify(key)


async def test_keyring_remembers_a_revocation_elsewhere_for_at_most_its_ttl(store):
    now = [1_000_000.0]
    ring = KeyRing(store, clock=lambda: now[0])
    other_replica = KeyRing(store, clock=lambda: now[0])
    key, row = ring.create("acme")
    await ring.verify(key)
    other_replica.revoke(row["key_id"])
    await ring.verify(key)  # still remembered as valid here
    now[0] += ring.ttl_s
    with pytest.raises(Unauthenticated, match="was revoked"):
        await ring.verify(key)


def test_refused_requests_leave_no_trace_and_do_not_list_the_features(served):
    for _ in range(5):
        r = httpx.post(f"{served.base_url}/v1/chat/completions", json={"model": "triage", "messages": MSG}, timeout=10)
        assert r.status_code == 401
    unknown = httpx.post(f"{served.base_url}/v1/chat/completions", json={"model": "nope", "messages": MSG},
                         headers={"Authorization": "Bearer shp_x_y"}, timeout=10)
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]["message"] and "triage" not in unknown.json()["error"]["message"]
    served.gateway.writer.flush_sync()
    assert served.gateway.store.count_traces() == 0  # an unauthenticated flood cannot fill the store
