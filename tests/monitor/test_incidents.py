"""Alerts end to end: a fake upstream degrades, traffic flows through a real server, and a webhook receiver
on 127.0.0.1 gets exactly one incident for the right owner, then its resolution."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from shipyard import load_config
from shipyard.cli import app
from shipyard.config import parse_config
from shipyard.monitor.alerts import burn_rate, slo_alerts
from shipyard.store import Store
from tests.fakes import Fail, Reply


class Receiver:
    """A webhook receiver: records each POST (path and JSON body); answers ``fail_first`` 500s first."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.posts.append((self.path, orjson.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 20.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < n:
            assert time.monotonic() < deadline, f"{len(self.posts)} of {n} webhook posts: {self.posts}"
            time.sleep(0.05)
        return self.posts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def config(primary, hook: str, extra: str = "", slo: str = "") -> str:
    return f"""
monitor: {{interval_s: 0.2, guard_window: 3s, webhook_retries: 3}}
providers:
  primary: {{kind: openai, base_url: "{primary.url}", api_key: none}}
features:
  triage:
    owners:
      incidents: {{name: support-oncall, webhook: "{hook}/oncall"}}
      changes: ml-team
      evaluation: {{name: ml-team, webhook: "{hook}/ml"}}
      risk: {{name: ana, webhook: "{hook}/risk"}}
    route: [{{provider: primary, model: m, timeout_s: 2, retries: 0}}]
    circuit_breaker: {{enabled: false}}
{slo or '''    slo:
      availability: 0.9
      period: 1d
      burn_alerts: [{long: 4s, short: 2s, factor: 2}]
      min_calls: 5'''}
{extra}
"""


def chat(served, n: int) -> list[int]:
    return [httpx.post(f"{served.base_url}/v1/chat/completions", timeout=10,
                       json={"model": "triage", "messages": [{"role": "user", "content": f"hi {i}"}]}).status_code
            for i in range(n)]


def burst(served, n: int) -> list[int]:
    """``chat`` with the ``n`` calls sent a few at a time."""
    def one(i: int) -> int:
        return httpx.post(f"{served.base_url}/v1/chat/completions", timeout=10,
                          json={"model": "triage", "messages": [{"role": "user", "content": f"hi {i}"}]}).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


class Traffic:
    """Calls flowing from a few threads (each pausing ``pause_s`` between its calls) until the ``with`` block
    ends: chat calls, or with ``invoke`` (the input of a worker's i-th call) typed calls; ``statuses`` has
    their codes."""

    def __init__(self, served, workers: int = 8, invoke=None, pause_s: float = 0.05) -> None:
        self.served, self.invoke, self.statuses, self.stop = served, invoke, [], threading.Event()
        self.pause_s = pause_s
        self.threads = [threading.Thread(target=self.run, args=(w,), daemon=True) for w in range(workers)]

    def run(self, worker: int) -> None:
        with httpx.Client(base_url=self.served.base_url, timeout=10) as client:
            i = worker
            while not self.stop.is_set():
                if self.invoke is None:
                    r = client.post("/v1/chat/completions", json={
                        "model": "triage", "messages": [{"role": "user", "content": f"hi {i}"}]})
                else:
                    r = client.post("/v1/features/triage/invoke", json={"input": self.invoke(i)})
                self.statuses.append(r.status_code)
                i += len(self.threads)
                self.stop.wait(self.pause_s)

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def opened_then_resolved(receiver, where: str, key: str | None = None, settle_s: float = 1.0) -> list:
    """Waits for the opening and the resolution, both to ``where`` (one owner's webhook), then a few more
    monitor rounds: still exactly those two posts (no incident opened twice, no resolution twice)."""
    posts = receiver.wait(2, timeout=30)
    time.sleep(settle_s)
    posts = list(receiver.posts)
    if key is None:  # Slack's format: the text only
        assert [p for p, _ in posts] == [where, where], posts
        assert " opened: " in posts[0][1]["text"] and " resolved: " in posts[1][1]["text"], posts
    else:
        assert [(p, b["event"], b["incident"]["key"]) for p, b in posts] == [
            (where, "incident.opened", key), (where, "incident.resolved", key)], posts
        assert posts[0][1]["incident"]["id"] == posts[1][1]["incident"]["id"]
        assert posts[1][1]["incident"]["status"] == "resolved"
    return posts


def test_an_outage_opens_one_incident_for_the_oncall_owner_then_resolves_it(primary, write_config, serve, receiver):
    path = write_config(config(primary, receiver.url))
    primary.default = Fail(500)
    served = serve(path)
    assert set(chat(served, 10)) == {503}
    posts = receiver.wait(1)
    time.sleep(1.0)  # more rounds while the outage lasts: still one incident (deduplicated)
    chat(served, 3)
    assert len(receiver.posts) == 1
    where, body = posts[0]
    assert where == "/oncall" and body["event"] == "incident.opened"
    assert body["incident"]["duty"] == "incidents" and body["incident"]["owner"] == "support-oncall"
    assert body["incident"]["key"] == "slo:availability:4s/2s" and "triage" in body["text"]
    primary.default = Reply()
    time.sleep(2.1)  # the short window forgets the failures
    assert set(chat(served, 10)) == {200}
    posts = receiver.wait(2)
    assert [(p, b["event"]) for p, b in posts] == [("/oncall", "incident.opened"), ("/oncall", "incident.resolved")]
    store = Store(load_config(path).model.storage)
    [incident] = store.incidents.list(include_resolved=True)
    timeline = [e["kind"] for e in store.incidents.get(incident["id"])["timeline"]]
    assert incident["status"] == "resolved" and timeline == ["opened", "notified", "resolved", "notified"]
    store.close()


def test_a_slow_upstream_burns_the_latency_slo_then_resolves_once_fast_again(primary, write_config, serve, receiver):
    """Latency counts calls slower than threshold_ms: while traffic flows, an upstream that takes 0.6 s makes
    every call slow (a burn of 10x against a 90% target, in both windows), so the incidents owner gets one
    latency incident, and only one however long it lasts; the upstream is fast again, the short window
    fills with fast calls: its resolution."""
    slo = ("    slo: {latency: {threshold_ms: 300, target: 0.9}, burn_alerts: [{long: 4s, short: 2s, factor: 2}],"
           " min_calls: 4}")
    path = write_config(config(primary, receiver.url, slo=slo))
    primary.default = Reply(delay_s=0.6)
    served = serve(path)
    with Traffic(served) as traffic:
        [(where, body)] = receiver.wait(1)
        assert where == "/oncall" and body["event"] == "incident.opened"
        assert body["incident"]["key"] == "slo:latency:4s/2s" and body["incident"]["owner"] == "support-oncall"
        details = body["incident"]["details"]
        assert details["objective"] == "latency" and details["short_counts"]["slow"] >= 4
        assert details["short_burn"] >= 2 and details["long_burn"] >= 2
        time.sleep(1.5)  # more rounds while it stays slow: still the one incident
        assert len(receiver.posts) == 1, receiver.posts
        primary.default = Reply()
        opened_then_resolved(receiver, "/oncall", "slo:latency:4s/2s")
    assert set(traffic.statuses) == {200}  # slow, never failed: the route's timeout is 2 s
    store = Store(load_config(path).model.storage)
    [incident] = store.incidents.list(include_resolved=True)
    timeline = store.incidents.get(incident["id"])["timeline"]
    assert incident["status"] == "resolved" and [e["kind"] for e in timeline] == [
        "opened", "notified", "resolved", "notified"]
    resolved = timeline[2]["detail"]  # the verdict that resolved it: fast calls, not an empty window
    assert resolved["by"] == "monitor" and resolved["details"]["short_burn"] < 2
    assert resolved["details"]["short_counts"]["total"] >= 4
    store.close()


def test_deliveries_are_retried_with_backoff_and_recorded(primary, write_config, serve):
    receiver = Receiver(fail_first=2)
    try:
        path = write_config(config(primary, receiver.url))
        primary.default = Fail(500)
        served = serve(path)
        chat(served, 10)
        receiver.wait(1)
        store = Store(load_config(path).model.storage)
        deadline = time.monotonic() + 5
        while True:
            [incident] = store.incidents.list()
            timeline = [e["kind"] for e in store.incidents.get(incident["id"])["timeline"]]
            if "notified" in timeline or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert timeline == ["opened", "delivery_failed", "delivery_failed", "notified"]
        store.close()
    finally:
        receiver.close()


def test_a_critical_guard_finding_goes_to_the_risk_owner_in_slack_format_then_resolves(primary, write_config, serve, receiver):
    guard = """    guard:
      policy:
        - {name: no-legal-advice, on: output, match: "(?i)you should sue", severity: critical, action: block}
"""
    slo = "    slo: {availability: 0.9, burn_alerts: [{long: 4s, short: 2s, factor: 2}]}"
    path = write_config(config(primary, receiver.url, extra=guard, slo=slo).replace(
        'risk: {name: ana, webhook: "' + receiver.url + '/risk"}',
        'risk: {name: ana, webhook: "' + receiver.url + '/risk", format: slack}'))
    primary.default = Reply("Honestly, you should sue them.")
    served = serve(path)
    assert chat(served, 1) == [400]
    [(where, body)] = receiver.wait(1)
    assert where == "/risk" and set(body) == {"text"} and "critical guard finding" in body["text"]
    assert "you should sue" not in body["text"].lower()  # names the rule's count, never the text
    primary.default = Reply("Your parcel ships today.")
    assert set(chat(served, 3)) == {200}  # clean answers: no new finding
    posts = opened_then_resolved(receiver, "/risk")  # once the 3 s guard window has passed the finding
    assert set(posts[1][1]) == {"text"} and "critical guard finding" in posts[1][1]["text"]
    assert "you should sue" not in posts[1][1]["text"].lower()


def test_incidents_cli_lists_acks_and_resolves_with_an_audit_entry(primary, write_config, serve, receiver):
    path = write_config(config(primary, receiver.url))
    primary.default = Fail(500)
    served = serve(path)
    chat(served, 10)
    receiver.wait(1)
    runner = CliRunner()
    listed = runner.invoke(app, ["incidents", "list", "--config", str(path), "--json"])
    [row] = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert row["status"] == "open" and row["owner"] == "support-oncall"
    assert runner.invoke(app, ["incidents", "ack", str(row["id"]), "--config", str(path)]).exit_code == 0
    again = runner.invoke(app, ["incidents", "ack", str(row["id"]), "--config", str(path)])
    assert again.exit_code == 1 and "acknowledged" in again.stderr
    shown = runner.invoke(app, ["incidents", "show", str(row["id"]), "--config", str(path)])
    assert "acknowledged" in shown.stdout and "notified" in shown.stdout
    owners = runner.invoke(app, ["owners", "--config", str(path)])
    assert "support-oncall" in owners.stdout and "/oncall" in owners.stdout
    store = Store(load_config(path).model.storage)
    assert [e["action"] for e in store.audit.export() if e["action"].startswith("incident.")] == ["incident.acknowledged"]
    store.close()


def test_burn_rate_needs_both_windows_and_enough_calls():
    assert burn_rate(1, 100, 0.99) == pytest.approx(1.0) and burn_rate(0, 0, 0.99) == 0.0
    slo = parse_config("""
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  f:
    owners: {incidents: a, changes: b, evaluation: c, risk: d}
    route: [{provider: p, model: m}]
    slo: {availability: 0.99, burn_alerts: [{long: 1h, short: 5m, factor: 14.4}], min_calls: 10}
""").model.features["f"].slo
    now = 10_000.0

    def counts(long: dict, short: dict):
        return lambda since, _ms: long if since < now - 3000 else short

    def fires(long: dict, short: dict) -> bool:
        return slo_alerts("f", slo, counts(long, short), now)[0].firing

    assert fires({"total": 1000, "errors": 200, "slow": 0}, {"total": 50, "errors": 20, "slow": 0})
    assert not fires({"total": 1000, "errors": 200, "slow": 0}, {"total": 50, "errors": 1, "slow": 0})  # over
    assert not fires({"total": 1000, "errors": 50, "slow": 0}, {"total": 50, "errors": 20, "slow": 0})  # a blip
    # too few calls to tell: neither firing nor clear (an open incident stays open)
    assert fires({"total": 8, "errors": 8, "slow": 0}, {"total": 8, "errors": 8, "slow": 0}) is None
    assert fires({"total": 1000, "errors": 200, "slow": 0}, {"total": 2, "errors": 0, "slow": 0}) is None
    # ... unless the long window shows the budget is not burning, or nothing happens at all
    assert fires({"total": 1000, "errors": 1, "slow": 0}, {"total": 2, "errors": 0, "slow": 0}) is False
    assert fires({"total": 0, "errors": 0, "slow": 0}, {"total": 0, "errors": 0, "slow": 0}) is False


async def test_a_verdict_without_enough_data_neither_opens_nor_resolves(primary, write_config, receiver):
    from shipyard.monitor.alerts import Alert, Monitor, judged
    from shipyard.runtime.call import Background

    assert (judged(True, 10, 10), judged(True, 3, 10), judged(True, 0, 10)) == (True, None, False)
    cfg = load_config(write_config(config(primary, receiver.url)))
    store = Store(cfg.model.storage)
    store.migrate()
    monitor = Monitor(cfg, store.incidents, Background())
    try:
        def verdict(firing: bool | None) -> Alert:
            return Alert("quality", "incidents", firing, "triage: inputs", {})

        assert await monitor.settle("triage", verdict(None), wait=True) is None  # nothing opens
        opened = await monitor.settle("triage", verdict(True), wait=True)
        assert opened is not None and "opened" in opened
        assert await monitor.settle("triage", verdict(None), wait=True) is None  # thin traffic: still open
        assert store.incidents.find_open("triage", "quality")["id"] == opened["opened"]
        assert "resolved" in await monitor.settle("triage", verdict(False), wait=True)
        assert [b["event"] for _, b in receiver.posts] == ["incident.opened", "incident.resolved"]
    finally:
        await monitor.notifier.aclose()
        store.close()


def test_config_errors_for_owners_and_slos(write_config):
    with pytest.raises(Exception, match="http:// or https://"):
        parse_config("""
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  f:
    owners: {incidents: {name: a, webhook: "ftp://x"}, changes: b, evaluation: c, risk: d}
    route: [{provider: p, model: m}]
""")
    with pytest.raises(Exception, match="not a duration"):
        parse_config("""
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  f:
    owners: {incidents: a, changes: b, evaluation: c, risk: d}
    route: [{provider: p, model: m}]
    slo: {availability: 0.99, burn_alerts: [{long: 1 hour, short: 5m, factor: 14.4}]}
""")
    with pytest.raises(Exception, match="risk"):
        parse_config("""
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9", api_key: none}}
features:
  f:
    owners: {incidents: a, changes: b, evaluation: c}
    route: [{provider: p, model: m}]
""")


def test_budget_and_online_evaluation_alerts_reach_their_owners(primary, write_config, serve, receiver):
    extra = """    budget: {usd_per_day: 0.001, mode: soft}
    eval:
      checks: [{name: instant, type: latency, max_ms: 0.001}]
      online: {sample: 1.0, alert_below: 0.5, alert_window: 1m, alert_min_samples: 3}
"""
    text = config(primary, receiver.url, extra=extra, slo="    slo: {availability: 0.5}").replace(
        "providers:", 'pricing:\n  "primary/m": {input: 1000, output: 1000}\nproviders:')
    path = write_config(text)
    primary.default = Reply(usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    served = serve(path)
    assert set(chat(served, 4)) == {200}
    receiver.wait(2)
    got = {(where, body["incident"]["key"]) for where, body in receiver.posts}
    assert got == {("/oncall", "budget:day"), ("/ml", "eval:online")}


def test_a_falling_online_score_opens_one_incident_for_the_evaluation_owner_then_resolves(
        primary, write_config, serve, receiver):
    """Every call is scored online by a check whose verdict depends on the answer; answers that fail it
    bring the mean score of the 3 s window below 0.5: one incident for the evaluation owner (/ml), and
    only one while the scores stay low; answers that pass it again raise the mean: its resolution."""
    extra = """    eval:
      checks: [{name: says-when, type: contains, value: ships}]
      online: {sample: 1.0, alert_below: 0.5, alert_window: 3s, alert_min_samples: 3}
"""
    path = write_config(config(primary, receiver.url, extra=extra, slo="    slo: {availability: 0.5}"))
    primary.default = Reply("I do not know.")
    served = serve(path)
    with Traffic(served, workers=2) as traffic:
        [(where, body)] = receiver.wait(1)
        assert where == "/ml" and body["event"] == "incident.opened" and body["incident"]["key"] == "eval:online"
        assert body["incident"]["duty"] == "evaluation" and body["incident"]["owner"] == "ml-team"
        assert body["incident"]["details"]["mean_score"] == 0.0 and body["incident"]["details"]["samples"] >= 3
        time.sleep(1.0)  # still failing, more rounds: still the one incident
        assert len(receiver.posts) == 1, receiver.posts
        primary.default = Reply("It ships today.")
        opened_then_resolved(receiver, "/ml", "eval:online")
    assert set(traffic.statuses) == {200}
    store = Store(load_config(path).model.storage)
    [incident] = store.incidents.list(include_resolved=True)
    timeline = store.incidents.get(incident["id"])["timeline"]
    assert [e["kind"] for e in timeline] == ["opened", "notified", "resolved", "notified"]
    resolved = timeline[2]["detail"]["details"]  # resolved by scores that recovered, not by an empty window
    assert resolved["mean_score"] >= 0.5 and resolved["samples"] >= 3
    store.close()


def test_drifted_inputs_open_an_incident_for_the_incidents_owner_then_resolve(primary, write_config, serve, receiver, tmp_path):
    """While calls flow, inputs unlike the reference (another category and text, amounts a hundred times
    larger) fill the 3 s window: one drift incident for the incidents owner naming the fields; inputs like
    the reference flow again and the drifted ones leave the window: its resolution, judged on enough calls
    (the window never runs short of min_rows on the way, so the verdict is never "too few to judge")."""
    def like_reference(i: int) -> dict:
        return {"text": "where is my parcel", "category": "shipping", "amount": 10 + i % 7}

    def drifted(i: int) -> dict:
        return {"text": "refund my order now", "category": "billing", "amount": 900 + i}

    (tmp_path / "reference.jsonl").write_text("".join(orjson.dumps(like_reference(i)).decode() + "\n"
                                                      for i in range(200)))
    extra = """    prompt: [{role: user, content: "{{ text }}"}]
    retention: {store_content: redacted}
    drift: {reference: reference.jsonl, window: 3s, every: 1s, min_rows: 30}
"""
    slo = "    slo: {availability: 0.5}"
    path = write_config(config(primary, receiver.url, extra=extra, slo=slo))
    served = serve(path)
    inputs = [drifted]
    with Traffic(served, workers=3, invoke=lambda i: inputs[0](i)) as traffic:
        [(where, body)] = receiver.wait(1)
        assert where == "/oncall" and body["event"] == "incident.opened" and body["incident"]["key"] == "drift"
        details = body["incident"]["details"]
        assert {"category", "amount"} <= set(details["drifted_fields"]) and details["current_rows"] >= 30
        inputs[0] = like_reference
        opened_then_resolved(receiver, "/oncall", "drift", settle_s=1.5)
    assert set(traffic.statuses) == {200}
    store = Store(load_config(path).model.storage)
    [incident] = store.incidents.list(include_resolved=True)
    timeline = store.incidents.get(incident["id"])["timeline"]
    assert [e["kind"] for e in timeline] == ["opened", "notified", "resolved", "notified"]
    resolved = timeline[2]["detail"]["details"]  # judged (enough calls in the window), and not drifted
    assert resolved["current_rows"] >= 30 and not {"category", "amount"} & set(resolved["drifted_fields"])
    store.close()


def test_drift_needs_stored_inputs(primary, write_config, receiver):
    extra = "    drift: {reference: reference.jsonl}\n"
    path = write_config(config(primary, receiver.url, extra=extra))
    from shipyard import Gateway

    with pytest.raises(Exception, match="store_content: redacted"):
        Gateway(load_config(path))


def test_calls_without_stored_inputs_are_not_missing_values_against_a_file(primary, write_config, receiver,
                                                                             tmp_path):
    """Calls from before store_content was set (or sealed ones) have no inputs: against a file of inputs
    they are left out, not counted as missing values, and min_rows counts the calls that have inputs."""
    from tests.store.test_store import record

    (tmp_path / "reference.jsonl").write_text("".join(
        orjson.dumps({"text": f"where is parcel {i % 9}", "amount": 10 + i % 7}).decode() + "\n" for i in range(200)))
    extra = """    retention: {store_content: redacted}
    drift: {reference: reference.jsonl, window: 1h, every: 1s, min_rows: 30}
    slo: {availability: 0.5}
"""
    cfg = load_config(write_config(config(primary, receiver.url, extra=extra, slo=" ")))
    assert cfg.model.features["triage"].drift.reference == "reference.jsonl"
    store = Store(cfg.model.storage)
    store.migrate()
    now = time.time()
    with_inputs = [{**record(i, "triage"), "started_at": now - 60 - i, "content_mode": "redacted",
                    "content": {"input": {"text": f"where is parcel {i % 9}", "amount": 10 + i % 7}}}
                   for i in range(40)]
    without = [{**record(100 + i, "triage"), "started_at": now - 30 - i} for i in range(30)]
    store.insert_traces(with_inputs + without)
    from shipyard.monitor.alerts import Monitor
    from shipyard.runtime.call import Background

    monitor = Monitor(cfg, store.incidents, Background(), store.evals, store)
    [drift] = [a for f, a in monitor.alerts(now) if a.key == "drift"]
    assert drift.firing is False and drift.details["current_rows"] == 40, drift.title
    store.close()


def test_a_traffic_window_in_the_config_may_be_open_ended_or_relative(write_config, primary, receiver):
    for reference in ("traffic:2026-11-01..", "traffic:2026-11-01..1d", "traffic:14d..7d"):
        extra = f"    drift: {{reference: '{reference}'}}\n"
        assert load_config(write_config(config(primary, receiver.url, extra=extra))).model.features[
            "triage"].drift.reference == reference
    with pytest.raises(Exception, match="ends before it starts"):
        load_config(write_config(config(primary, receiver.url, extra="    drift: {reference: 'traffic:1d..2d'}\n")))


def test_a_refusal_rate_that_climbs_against_an_approved_window_is_an_incident_then_resolves(
        primary, write_config, serve, receiver):
    """Outcome drift needs no stored content: the reference is last day's recorded traffic (2 refusals in
    100 calls); the upstream starts refusing every other call; the incidents owner gets one drift incident
    naming outcome.refused, and its resolution once the refusals leave the window."""
    from tests.store.test_store import record

    extra = "    drift: {reference: 'traffic:2d..1d', window: 3s, every: 1s, min_rows: 30}\n"
    path = write_config(config(primary, receiver.url, extra=extra, slo="    slo: {availability: 0.5}"))
    store = Store(load_config(path).model.storage)
    store.migrate()
    day_ago = time.time() - 1.5 * 86400
    store.insert_traces([{**record(i, "triage"), "started_at": day_ago + i, "events":
                          [{"kind": "refusal", "how": "phrase"}] if i in (17, 71) else []} for i in range(100)])
    store.close()
    primary.script(*[Reply("I'm sorry, but I can't help with that.") if i % 2 else Reply("It ships today.")
                     for i in range(40)])
    served = serve(path)
    assert set(burst(served, 40)) == {200}  # at once: all 40 in the 3 s window, even on a loaded machine
    [(where, body)] = receiver.wait(1)
    assert where == "/oncall" and body["event"] == "incident.opened" and body["incident"]["key"] == "drift"
    details = body["incident"]["details"]
    assert details["drifted_outcomes"] == ["outcome.refused"] and details["reference_rows"] == 100
    assert details["tests"]["outcome.refused"]["test"] == "z" and "outcome.refused" in body["incident"]["title"]
    primary.default = Reply("It ships today.")
    time.sleep(3.2)  # the refusals leave the 3 s window
    assert set(chat(served, 40)) == {200}
    posts = receiver.wait(2)
    assert [(p, b["event"]) for p, b in posts] == [("/oncall", "incident.opened"), ("/oncall", "incident.resolved")]
