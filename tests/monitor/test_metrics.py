"""Metrics of every call through the library (the HTTP endpoint is in tests/server/test_metrics_http.py):
what each counter counts, bounded segment labels, the gauges read at scrape time, and that a broken
recorder never breaks a call."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipyard import Gateway, load_config
from shipyard.errors import AllRoutesFailed
from shipyard.monitor.metrics import DURATION_BUCKETS, SEGMENT_VALUES, Metrics, SegmentLabels
from tests.conftest import OWNERS, two_route_config
from tests.fakes import Fail, Reply

MSG = [{"role": "user", "content": "where is my parcel"}]
PRICE_IN, PRICE_OUT = 0.15, 0.60  # USD per million tokens for primary/gpt-4o-mini below


async def no_sleep(seconds: float) -> None:
    return None


async def scrape(gw: Gateway, accept: str = "") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    body, content_type = await gw.metrics.render(accept)
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


@pytest.fixture
def gw_config(primary, backup, write_config):
    return write_config(two_route_config(primary, backup, extra=f"""pricing:
      primary/gpt-4o-mini: {{input: {PRICE_IN}, output: {PRICE_OUT}}}
    """))


async def test_a_failover_counts_the_call_its_attempts_tokens_cost_and_duration(gw_config, primary, backup):
    primary.script(Fail(500), Fail(502), Fail(503))  # three tries (retries: 2), then the backup answers
    backup.script(Reply("from the backup"))
    gw = Gateway(load_config(gw_config), sleep=no_sleep)
    try:
        reply = await gw.chat("triage", MSG)
        assert reply.route == "backup/small-model"
        primary.script(Reply("ok"))
        await gw.chat("triage", MSG)
        s = await scrape(gw)
    finally:
        await gw.aclose()
    assert value(s, "shipyard_requests_total", feature="triage", route="backup/small-model", status="ok",
                 segment="") == 1
    assert value(s, "shipyard_requests_total", feature="triage", route="primary/gpt-4o-mini", status="ok",
                 segment="") == 1
    assert value(s, "shipyard_attempts_total", feature="triage", route="primary/gpt-4o-mini", outcome="error") == 3
    assert value(s, "shipyard_attempts_total", feature="triage", route="primary/gpt-4o-mini", outcome="ok") == 1
    assert value(s, "shipyard_attempts_total", feature="triage", route="backup/small-model", outcome="ok") == 1
    for route in ("backup/small-model", "primary/gpt-4o-mini"):  # the fake reports 5 + 3 tokens
        assert value(s, "shipyard_tokens_total", feature="triage", route=route, kind="prompt") == 5
        assert value(s, "shipyard_tokens_total", feature="triage", route=route, kind="completion") == 3
    # only the primary is priced
    assert value(s, "shipyard_cost_usd_total", feature="triage", route="primary/gpt-4o-mini") == pytest.approx(
        (5 * PRICE_IN + 3 * PRICE_OUT) / 1e6)
    assert value(s, "shipyard_cost_usd_total", feature="triage", route="backup/small-model") is None
    count = value(s, "shipyard_request_duration_seconds_count", feature="triage", route="backup/small-model",
                  segment="")
    inf = value(s, "shipyard_request_duration_seconds_bucket", feature="triage", route="backup/small-model",
                segment="", le="+Inf")
    top = value(s, "shipyard_request_duration_seconds_bucket", feature="triage", route="backup/small-model",
                segment="", le="60.0")
    assert count == inf == top == 1
    assert 0 < value(s, "shipyard_request_duration_seconds_sum", feature="triage", route="backup/small-model",
                     segment="") < 5
    assert not any(name == "shipyard_errors_total" for name, _ in s)


async def test_a_failed_call_is_counted_by_its_error_code(gw_config, primary, backup):
    primary.default = backup.default = Fail(500)
    gw = Gateway(load_config(gw_config), sleep=no_sleep)
    try:
        with pytest.raises(AllRoutesFailed):
            await gw.chat("triage", MSG)
        s = await scrape(gw)
    finally:
        await gw.aclose()
    assert value(s, "shipyard_errors_total", feature="triage", error_type="all_routes_failed") == 1
    assert value(s, "shipyard_requests_total", feature="triage", route="none", status="error", segment="") == 1
    assert value(s, "shipyard_attempts_total", feature="triage", route="backup/small-model", outcome="error") == 2


def test_the_duration_buckets_reach_a_minute_and_are_counted_at_their_upper_bound():
    assert DURATION_BUCKETS[-1] == 60.0 and list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)
    metrics = Metrics({})

    class Feature:
        name = "f"

    class Call:  # the shape Metrics reads: a finished call
        def __init__(self) -> None:
            self.feature, self.route, self.status, self.error, self.usage = Feature(), "p/m", "ok", None, None
            self.attempts: list[Any] = []
            self.events: list[Any] = []
            self.metadata: dict[str, Any] = {}
            self.cost_nano = self.cache = self.input = None

    metrics._record(Call(), 0.5)  # exactly a bound: in that bucket (le means <=)
    metrics._record(Call(), 0.5000001)
    metrics._record(Call(), 61.0)
    counts = metrics.durations[("f", "p/m", "")].counts
    assert counts[DURATION_BUCKETS.index(0.5)] == 1 and counts[DURATION_BUCKETS.index(1.0)] == 1
    assert counts[-1] == 1  # +Inf


def test_segment_labels_are_canonical_cut_and_bounded():
    labels = SegmentLabels(["lang", "tier"])
    assert labels.of({"tier": "gold", "lang": "es"}) == "lang=es,tier=gold"  # declared order, not given order
    assert labels.of({"lang": "en"}, {"lang": "de", "tier": "free"}) == "lang=en,tier=free"  # headers first
    assert labels.of(None, {"tier": 3}) == "tier=3"
    assert labels.of(None, None) == "" and labels.of({"other": "x"}) == ""
    assert labels.of({"lang": "x" * 100}) == "lang=" + "x" * 32
    assert labels.of({"lang": "a,b=c"}) == "lang=a_b_c"
    seen = len(labels.seen)
    for i in range(SEGMENT_VALUES - seen):
        assert labels.of({"lang": f"l{i}"}) == f"lang=l{i}"
    assert labels.of({"lang": "one-too-many"}) == "other"
    assert labels.of({"lang": "es", "tier": "gold"}) == "lang=es,tier=gold"  # known ones keep their label
    assert labels.of({}) == ""  # no segment is not a new value
    assert len(labels.seen) == SEGMENT_VALUES


async def test_segments_come_from_headers_or_input_fields_per_feature(primary, write_config):
    path = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      typed:
        owners: {OWNERS}
        segments: [lang, tier]
        input_schema: {{type: object, required: [text]}}
        prompt: [{{role: user, content: "{{{{ text }}}}"}}]
        route: [{{provider: primary, model: m}}]
      plain:
        owners: {OWNERS}
        route: [{{provider: primary, model: m}}]
    """)
    primary.script(Reply('{"ok": true}'))
    async with Gateway.from_config(path) as gw:
        await gw.invoke("typed", {"text": "hola", "lang": "es", "tier": "gold"})
        await gw.invoke("typed", {"text": "hi"})
        call = gw.new_call("typed", "invoke", {}, input={"text": "x", "lang": "es"},
                           metadata={"segment": {"tier": "gold"}})
        await gw.run(call)
        call = gw.new_call("plain", "chat", {"messages": MSG}, metadata={"segment": {"lang": "es"}})
        await gw.run(call)  # a feature without declared segments has none, whatever the headers say
        for i in range(SEGMENT_VALUES + 5):
            await gw.invoke("typed", {"text": "x", "lang": f"lang-{i}"})
        s = await scrape(gw)
    ok = {"feature": "typed", "route": "primary/m", "status": "ok"}
    assert value(s, "shipyard_requests_total", **ok, segment="lang=es,tier=gold") == 2
    assert value(s, "shipyard_requests_total", **ok, segment="") == 1
    assert value(s, "shipyard_requests_total", feature="plain", route="primary/m", status="ok", segment="") == 1
    segments = {dict(labels)["segment"] for name, labels in s if name == "shipyard_requests_total"
                and dict(labels)["feature"] == "typed"}
    assert len(segments - {""}) == SEGMENT_VALUES + 1  # 20 values, then "other"
    assert value(s, "shipyard_requests_total", **ok, segment="other") == 6  # 25 new - 19 places left
    assert value(s, "shipyard_request_duration_seconds_count", feature="typed", route="primary/m",
                 segment="other") == 6


async def test_cache_hits_and_guard_findings_are_counted(primary, write_config):
    path = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      guarded:
        owners: {OWNERS}
        cache: {{exact: {{ttl_s: 60}}}}
        guard:
          pii: {{input: redact}}
          policy:
            - {{name: no-hello, on: output, match: "(?i)hello", severity: minor, action: flag}}
        route: [{{provider: primary, model: m}}]
    """)
    primary.script(Reply("hello there"))
    async with Gateway.from_config(path) as gw:
        first = await gw.chat("guarded", [{"role": "user", "content": "mail me at ana@example.com"}])
        second = await gw.chat("guarded", [{"role": "user", "content": "mail me at ana@example.com"}])
        assert first.cache is None and second.cache == "exact"
        s = await scrape(gw)
    assert value(s, "shipyard_cache_hits_total", feature="guarded", kind="exact") == 1
    assert value(s, "shipyard_requests_total", feature="guarded", route="cache", status="ok", segment="") == 1
    assert value(s, "shipyard_guard_findings_total", feature="guarded", guard="policy", rule="no-hello",
                 severity="minor", action="flag") == 2  # the cached answer is judged too
    assert value(s, "shipyard_guard_findings_total", feature="guarded", guard="pii", rule="pii",
                 severity="minor", action="redact") == 2


async def test_breaker_states_are_read_at_scrape_time(primary, write_config):
    path = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      fragile:
        owners: {OWNERS}
        circuit_breaker: {{min_calls: 2, failure_ratio: 0.5, cooldown_s: 600}}
        route: [{{provider: primary, model: m, retries: 0}}]
    """)
    primary.default = Fail(500)
    gw = Gateway(load_config(path), sleep=no_sleep)
    try:
        s = await scrape(gw)
        assert value(s, "shipyard_circuit_breaker_state", provider="primary", model="m", state="closed") == 1
        assert value(s, "shipyard_circuit_breaker_state", provider="primary", model="m", state="open") == 0
        for _ in range(2):
            with pytest.raises(AllRoutesFailed):
                await gw.chat("fragile", MSG)
        s = await scrape(gw)
    finally:
        await gw.aclose()
    assert value(s, "shipyard_circuit_breaker_state", provider="primary", model="m", state="open") == 1
    assert value(s, "shipyard_circuit_breaker_state", provider="primary", model="m", state="closed") == 0
    assert value(s, "shipyard_circuit_breaker_state", provider="primary", model="m", state="half_open") == 0


async def test_budgets_remaining_are_read_from_the_state(primary, write_config):
    path = write_config(f"""
    pricing:
      primary/m: {{input: 100, output: 200}}
    tenants:
      acme: {{budget: {{usd_per_month: 50}}}}
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      paid:
        owners: {OWNERS}
        budget: {{usd_per_day: 1}}
        route: [{{provider: primary, model: m}}]
    """)
    primary.script(Reply("ok"))  # 5 prompt + 3 completion tokens: 0.0005 + 0.0006 USD
    async with Gateway.from_config(path) as gw:
        s = await scrape(gw)
        assert value(s, "shipyard_budget_remaining_usd", scope="feature", name="paid", period="day") == 1.0
        await gw.chat("paid", MSG, tenant="acme")
        await gw.services.background.drain()  # the real cost is settled in the background
        s = await scrape(gw)
    assert value(s, "shipyard_budget_limit_usd", scope="feature", name="paid", period="day") == 1.0
    assert value(s, "shipyard_budget_remaining_usd", scope="feature", name="paid", period="day") == pytest.approx(
        1 - 0.0011)
    assert value(s, "shipyard_budget_limit_usd", scope="tenant", name="acme", period="month") == 50.0
    assert value(s, "shipyard_budget_remaining_usd", scope="tenant", name="acme", period="month") == pytest.approx(
        50 - 0.0011)


async def test_a_remote_budget_is_read_at_most_every_30_seconds():
    now = [1000.0]
    reads = []

    async def budgets():
        reads.append(now[0])
        return [("feature", "f", "day", 1.0, 1.0 - len(reads) / 10)]

    metrics = Metrics({}, budgets=budgets, budgets_ttl_s=30.0, monotonic=lambda: now[0])
    await metrics.refresh()
    now[0] += 29
    await metrics.refresh()
    assert reads == [1000.0] and metrics.budget_rows[0][4] == pytest.approx(0.9)
    now[0] += 1
    await metrics.refresh()
    assert reads == [1000.0, 1030.0] and metrics.budget_rows[0][4] == pytest.approx(0.8)


async def test_online_evaluation_scores_are_queried_at_most_every_30_seconds(primary, write_config):
    path = write_config(f"""
    providers:
      primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
    features:
      scored:
        owners: {OWNERS}
        segments: [lang]
        eval:
          checks:
            - {{name: in-time, type: latency, max_ms: 100000}}
            - {{name: impossible, type: latency, max_ms: 0.001}}
          online: {{sample: 1.0}}
        route: [{{provider: primary, model: m}}]
    """)
    async with Gateway.from_config(path) as gw:
        for lang in ("es", "es", "en"):
            call = gw.new_call("scored", "chat", {"messages": MSG}, metadata={"segment": {"lang": lang}})
            await gw.run(call)
        await gw.services.background.drain()  # the scoring runs in the background
        s = await scrape(gw)
        await gw.chat("scored", MSG)
        await gw.services.background.drain()
        again = await scrape(gw)  # within 30 s: the same figures, no query
    assert value(s, "shipyard_online_eval_samples", feature="scored") == 3
    assert value(s, "shipyard_online_eval_score", feature="scored") == pytest.approx(0.5)  # one check of two
    assert value(s, "shipyard_online_eval_pass_rate", feature="scored") == 0
    assert value(s, "shipyard_online_eval_segment_score", feature="scored", segment="lang=es") == pytest.approx(0.5)
    assert value(s, "shipyard_online_eval_segment_score", feature="scored", segment="lang=en") == pytest.approx(0.5)
    assert value(again, "shipyard_online_eval_samples", feature="scored") == 3


async def test_gateways_keep_their_own_registries(gw_config, primary):
    async with Gateway.from_config(gw_config) as one, Gateway.from_config(gw_config) as two:
        await one.chat("triage", MSG)
        await one.chat("triage", MSG)
        await two.chat("triage", MSG)
        assert one.metrics.registry is not two.metrics.registry
        a, b = await scrape(one), await scrape(two)
    labels = {"feature": "triage", "route": "primary/gpt-4o-mini", "status": "ok", "segment": ""}
    assert value(a, "shipyard_requests_total", **labels) == 2 and value(b, "shipyard_requests_total", **labels) == 1


async def test_openmetrics_is_served_to_a_scraper_that_asks(gw_config, primary):
    async with Gateway.from_config(gw_config) as gw:
        await gw.chat("triage", MSG)
        body, content_type = await gw.metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.rstrip().endswith("# EOF") and "shipyard_requests_total{" in text


async def test_a_broken_recorder_never_breaks_a_call(gw_config, primary, caplog):
    def broken(call: Any) -> None:
        raise RuntimeError("recorder bug")

    async with Gateway.from_config(gw_config) as gw:
        gw.services.recorders.insert(0, broken)
        with caplog.at_level(logging.WARNING, logger="shipyard.runtime"):
            reply = await gw.chat("triage", MSG)
        assert reply.content == "hello from the fake"
        assert "recorder bug" in caplog.text
        s = await scrape(gw)  # the recorders after it still ran
    assert value(s, "shipyard_requests_total", feature="triage", route="primary/gpt-4o-mini", status="ok",
                 segment="") == 1


def test_metrics_that_cannot_read_a_call_log_once_and_do_not_raise(caplog):
    metrics = Metrics({})
    with caplog.at_level(logging.WARNING, logger="shipyard.monitor"):
        metrics.record(object())  # type: ignore[arg-type]
        metrics.record(object())  # type: ignore[arg-type]
    assert caplog.text.count("metrics: record failed") == 1


async def test_a_gauge_source_that_fails_leaves_the_rest_of_the_scrape(caplog):
    async def budgets():
        raise ConnectionError("redis away")

    def breakers():
        raise RuntimeError("breaker bug")

    metrics = Metrics({}, budgets=budgets, breakers=breakers)
    with caplog.at_level(logging.WARNING, logger="shipyard.monitor"):
        body, _ = await metrics.render()
    text = body.decode()
    assert "# TYPE shipyard_requests_total counter" in text
    assert "shipyard_budget_remaining_usd{" not in text and "shipyard_circuit_breaker_state{" not in text
    assert "redis away" in caplog.text and "breaker bug" in caplog.text
