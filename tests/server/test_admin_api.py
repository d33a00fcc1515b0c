"""The admin API: keys and costs over HTTP, for admin keys only."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import two_route_config

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def served(primary, backup, write_config, serve):
    extra = 'pricing: {"primary/gpt-4o-mini": {input: 1000, output: 1000}}\n    auth: keys'
    return serve(write_config(two_route_config(primary, backup, extra=extra)))


@pytest.fixture
def admin_key(served):
    key, _ = served.gateway.keys.create("ops", role="admin")
    return key


def test_an_admin_creates_lists_and_revokes_keys_over_http(served, admin_key):
    base, auth = served.base_url + "/v1/admin/keys", {"Authorization": f"Bearer {admin_key}"}
    r = httpx.post(base, json={"tenant": "acme", "features": ["triage"], "rpm": 60, "expires": "30d"}, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["key"].startswith("shp_") and created["tenant"] == "acme" and created["rpm"] == 60
    assert "salt" not in created and "secret_hash" not in created and created["expires_at"] > created["created_at"]
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=created["key"], max_retries=0)
    assert client.chat.completions.create(model="triage", messages=MSG).choices[0].message.content
    listed = httpx.get(base, params={"tenant": "acme"}, headers=auth).json()["data"]
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert all(created["key"].split("_", 2)[2] not in str(k) for k in listed)
    assert httpx.delete(f"{base}/{created['key_id']}", headers=auth).json() == {"revoked": created["key_id"]}
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client.chat.completions.create(model="triage", messages=MSG)
    assert httpx.delete(f"{base}/nosuchkey", headers=auth).status_code == 404


def test_bad_key_requests_are_400_with_the_reason(served, admin_key):
    base, auth = served.base_url + "/v1/admin/keys", {"Authorization": f"Bearer {admin_key}"}
    cases = [
        ({"features": ["triage"]}, "tenant"),
        ({"tenant": "acme", "role": "root"}, "role must be one of"),
        ({"tenant": "acme", "features": ["nope"]}, "unknown feature(s) nope"),
        ({"tenant": "acme", "expires": "soon"}, "not a duration"),
        ({"tenant": "acme", "rpm": 0}, "rpm"),
        ({"tenant": "acme", "colour": "red"}, "colour"),
        ({"tenant": "acme", "usd_per_day": "inf"}, "usd_per_day"),
    ]
    for body, says in cases:
        r = httpx.post(base, json=body, headers=auth)
        assert r.status_code == 400 and says in r.json()["error"]["message"], (body, r.text)
    assert httpx.get(base, headers=auth).json()["data"][0]["tenant"] == "ops"  # nothing was created


def test_only_admins_reach_the_admin_api(served):
    app_key, _ = served.gateway.keys.create("acme")
    owner_key, _ = served.gateway.keys.create("acme", role="owner")
    for key in (app_key, owner_key):
        r = httpx.get(served.base_url + "/v1/admin/keys", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403 and "role admin" in r.json()["error"]["message"]
    assert httpx.get(served.base_url + "/v1/admin/costs").status_code == 401


def test_costs_over_http(served, admin_key):
    key, _ = served.gateway.keys.create("acme")
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="triage", messages=MSG)
    auth = {"Authorization": f"Bearer {admin_key}"}
    rows = httpx.get(served.base_url + "/v1/admin/costs", params={"by": "tenant", "since": "1h"}, headers=auth)
    acme = next(r for r in rows.json()["data"] if r["group"] == "acme")
    assert acme["calls"] == 3 and acme["cost_usd"] == pytest.approx(3 * 0.008)
    bad = httpx.get(served.base_url + "/v1/admin/costs", params={"by": "colour"}, headers=auth)
    assert bad.status_code == 400 and "by must be one of" in bad.json()["error"]["message"]
