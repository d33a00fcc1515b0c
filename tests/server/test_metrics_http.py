"""``GET /metrics`` over HTTP after traffic from the official OpenAI SDK, who may read it, and the trace id
of every response leading to the call's spans at a real OTLP collector."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OWNERS
from tests.fakes import Fail, Stream
from tests.monitor.test_tracing import OtlpReceiver

MSG = [{"role": "user", "content": "my invoice is wrong"}]


def config(primary, backup, extra: str = "") -> str:
    return f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
      backup: {{kind: openai, base_url: "{backup.url}", api_key: none}}
    features:
      triage:
        owners: {OWNERS}
        segments: [lang, tier]
        route:
          - {{provider: primary, model: gpt-4o-mini, timeout_s: 2, retries: 0}}
          - {{provider: backup, model: small-model, timeout_s: 2, retries: 0}}
    {extra}
    """


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict, metric: str, **labels: str) -> float | None:
    return found.get((metric, tuple(sorted(labels.items()))))


@pytest.fixture
def receiver():
    with OtlpReceiver() as r:
        yield r


def test_metrics_count_sdk_traffic_by_route_status_and_segment(primary, backup, write_config, serve):
    served = serve(write_config(config(primary, backup)))
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused", max_retries=0)
    try:
        client.chat.completions.create(model="triage", messages=MSG,
                                       extra_headers={"X-Shipyard-Segment-Lang": "es", "X-Shipyard-Segment-Tier": "gold"})
        primary.script(Fail(500))
        client.chat.completions.create(model="triage", messages=MSG)  # fails over to the backup
        primary.script(Stream(["a", "b"]))
        assert len(list(client.chat.completions.create(model="triage", messages=MSG, stream=True))) >= 2
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=MSG)  # no feature: no call to count
    finally:
        client.close()
    r = httpx.get(served.base_url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(r.text)
    ok = {"feature": "triage", "status": "ok"}
    assert value(found, "shipyard_requests_total", **ok, route="primary/gpt-4o-mini", segment="lang=es,tier=gold") == 1
    assert value(found, "shipyard_requests_total", **ok, route="primary/gpt-4o-mini", segment="") == 1  # the stream
    assert value(found, "shipyard_requests_total", **ok, route="backup/small-model", segment="") == 1
    assert value(found, "shipyard_attempts_total", feature="triage", route="primary/gpt-4o-mini", outcome="error") == 1
    assert value(found, "shipyard_request_duration_seconds_count", feature="triage", route="primary/gpt-4o-mini",
                 segment="lang=es,tier=gold") == 1
    assert value(found, "shipyard_tokens_total", feature="triage", route="primary/gpt-4o-mini", kind="prompt") == 10
    assert value(found, "shipyard_circuit_breaker_state", provider="backup", model="small-model", state="closed") == 1
    assert sum(v for (name, _), v in found.items() if name == "shipyard_requests_total") == 3

    om = httpx.get(served.base_url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                   timeout=10)
    assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")


def test_with_keys_metrics_are_for_an_admin_unless_made_public(primary, backup, write_config, serve):
    served = serve(write_config(config(primary, backup, "auth: keys")))
    url = served.base_url + "/metrics"
    app_key, _ = served.gateway.keys.create("acme")
    admin_key, _ = served.gateway.keys.create("ops", role="admin")
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    forbidden = httpx.get(url, headers={"Authorization": f"Bearer {app_key}"}, timeout=10)
    assert forbidden.status_code == 403
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    assert allowed.status_code == 200 and "# TYPE shipyard_requests_total counter" in allowed.text

    public = serve(write_config(config(primary, backup, "auth: keys\n    telemetry: {metrics_public: true}"),
                                name="public.yaml"))
    assert httpx.get(public.base_url + "/metrics", timeout=10).status_code == 200


def test_the_trace_id_header_leads_to_the_calls_spans(primary, backup, write_config, serve, receiver):
    served = serve(write_config(config(primary, backup, f'telemetry: {{otlp_endpoint: "{receiver.url}"}}')))
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused", max_retries=0)
    try:
        primary.script(Fail(503))  # retries: 0, so the backup serves
        raw = client.chat.completions.with_raw_response.create(model="triage", messages=MSG)
        primary.script(Stream(["x", "y"]))
        with client.chat.completions.with_streaming_response.create(model="triage", messages=MSG,
                                                                    stream=True) as streamed:
            list(streamed.iter_lines())
    finally:
        client.close()
    trace_id = raw.headers["x-shipyard-trace-id"]
    spans = receiver.wait_for(trace_id, 3)  # exported within about a second, while the server runs
    assert sorted(s["name"] for s in spans) == ["chat gpt-4o-mini", "chat small-model", "chat triage"]
    root = next(s for s in spans if s["parent"] is None)
    assert root["attributes"]["shipyard.route"] == "backup/small-model"
    failed = next(s for s in spans if s["name"] == "chat gpt-4o-mini")
    assert failed["attributes"]["error.type"] == "provider_unavailable" and failed["status"] == 2  # STATUS_CODE_ERROR
    stream_spans = receiver.wait_for(streamed.headers["x-shipyard-trace-id"], 2)
    assert sorted(s["name"] for s in stream_spans) == ["chat gpt-4o-mini", "chat triage"]
