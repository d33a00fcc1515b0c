"""Calls rejected at admission (401: no valid key, 403: a key not for the feature) never reach the Record
stage, so nothing is stored for them; ``shipyard_rejected_requests_total`` counts them, by feature and
the error's code. Through the real server, with the official OpenAI SDK as the client."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import OWNERS
from tests.server.test_metrics_http import samples, value

MSG = [{"role": "user", "content": "my invoice is wrong"}]
REJECTED = "shipyard_rejected_requests_total"


def keyed_config(primary) -> str:
    return f"""
    auth: keys
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      triage:
        owners: {OWNERS}
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 2, retries: 0}}
      summarize:
        owners: {OWNERS}
        route:
          - {{provider: primary, model: small-model, timeout_s: 2, retries: 0}}
    """


def test_wrong_keys_and_keys_for_another_feature_are_counted_and_good_calls_are_not(primary, write_config,
                                                                                     serve):
    served = serve(write_config(keyed_config(primary)))
    keys = served.gateway.keys
    triage_key, _ = keys.create("acme", features=["triage"])
    summarize_key, _ = keys.create("acme", features=["summarize"])
    admin_key, _ = keys.create("ops", role="admin")
    revoked_key, row = keys.create("acme")
    keys.revoke(row["key_id"])

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=served.base_url + "/v1", api_key=key, max_retries=0)

    clients = [client(k) for k in ("sk-not-a-shipyard-key", "shp_0000_wrong", revoked_key, summarize_key,
                                   triage_key)]
    wrong, unknown, revoked, other, good = clients
    try:
        for c in (wrong, unknown, revoked):
            with pytest.raises(openai.AuthenticationError):
                c.chat.completions.create(model="triage", messages=MSG)
        with pytest.raises(openai.PermissionDeniedError):
            other.chat.completions.create(model="triage", messages=MSG)
        with pytest.raises(openai.PermissionDeniedError):
            good.chat.completions.create(model="summarize", messages=MSG)
        reply = good.chat.completions.create(model="triage", messages=MSG)
        assert reply.choices[0].message.content == "hello from the fake"
        with pytest.raises(openai.NotFoundError):  # no such feature: 404 before any pipeline, not counted
            good.chat.completions.create(model="nope", messages=MSG)
    finally:
        for c in clients:
            c.close()
    assert httpx.get(served.base_url + "/metrics", timeout=10).status_code == 401  # not a call: not counted
    r = httpx.get(served.base_url + "/metrics", headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    assert r.status_code == 200
    assert f"# TYPE {REJECTED} counter" in r.text
    found = samples(r.text)
    assert value(found, REJECTED, feature="triage", reason="invalid_api_key") == 3
    assert value(found, REJECTED, feature="triage", reason="forbidden") == 1
    assert value(found, REJECTED, feature="summarize", reason="forbidden") == 1
    assert sum(v for (name, _), v in found.items() if name == REJECTED) == 5  # not the good call, not the 404
    assert value(found, "shipyard_requests_total", feature="triage", route="primary/gpt-4o-mini", status="ok",
                 segment="") == 1
    # the rejected calls were never recorded
    assert sum(v for (name, _), v in found.items() if name == "shipyard_requests_total") == 1
    assert not any(name == "shipyard_errors_total" for name, _ in found)


def test_without_rejections_the_counter_has_no_series(primary, write_config, serve):
    served = serve(write_config(keyed_config(primary).replace("auth: keys", "auth: none")))
    c = openai.OpenAI(base_url=served.base_url + "/v1", api_key="anything", max_retries=0)
    try:
        c.chat.completions.create(model="triage", messages=MSG)
    finally:
        c.close()
    found = samples(httpx.get(served.base_url + "/metrics", timeout=10).text)
    assert not any(name == REJECTED for name, _ in found)
