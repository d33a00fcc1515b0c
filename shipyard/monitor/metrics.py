"""Prometheus metrics: what every call did, by feature, route and segment, served at ``GET /metrics``.

Each finished call is counted once, by ``Metrics.record`` (a recorder the Record stage calls after the
trace is submitted); a call rejected at admission (no valid key, a key not for the feature), which
never reaches the Record stage, by ``Metrics.rejected``, which the Admit stage calls (``Services.rejected``). They only add to
plain dicts keyed by label tuples, on the event loop, a few hundred nanoseconds per series;
prometheus-client's own metric objects would take a lock per increment and cost several times as much.
The dicts are turned into metric families when scraped, by a collector in the gateway's own
``CollectorRegistry`` (never the global one: several gateways in one process, as in tests, do not
clash), and rendered by prometheus-client in the text or OpenMetrics format the scraper asks for.

Gauges are read when scraped: circuit breakers from their local mirror (no round trip), budgets from
the shared state (in-process state: at every scrape; Redis: at most every 30 s, one pipelined round
trip), online evaluation scores from the store (a query: at most every 30 s, over the last hour).

Cardinality is bounded by the config, except for segments, which come from requests: a feature's
segment label is ``k=v,k=v`` over its declared ``segments`` keys, each value cut to 32 characters, and
at most 20 distinct labels per feature, per process; later new ones count as ``other``. Routes, error
types, guards, rules, severities and actions are named by the config and the code, not by callers (a
rejected call's feature too: the server answers 404 to an unknown one before any pipeline runs).

Every replica exposes its own counters (scrape each one; Prometheus sums them across ``instance``),
and counters start from zero when a process starts, as Prometheus expects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..errors import error_class_name

if TYPE_CHECKING:
    from ..runtime.call import Call
    from ..runtime.gateway import Gateway

_log = logging.getLogger("shipyard.monitor")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Seconds: cache hits and refusals at the bottom, typical model answers in the middle, long
generations up to the 60 s a deadline rarely exceeds."""
SEGMENT_VALUES = 20
"""Distinct segment labels per feature (per process); later new ones are counted as ``other``."""
SEGMENT_WIDTH = 32
"""Characters kept of each segment value."""
OTHER = "other"
SLOW_GAUGES_S = 30.0
"""The longest a gauge that costs a query or a round trip is served from memory."""
ONLINE_WINDOW_S = 3600.0
"""Online evaluation gauges cover the scores of the last hour."""
BREAKER_STATES = ("closed", "open", "half_open")


class SegmentLabels:
    """One feature's segment label: its declared keys' values as ``k=v,k=v`` (keys in declared order,
    absent ones left out; '' when none is given), bounded to ``limit`` distinct labels."""

    __slots__ = ("keys", "limit", "seen", "width")

    def __init__(self, keys: Sequence[str], *, limit: int = SEGMENT_VALUES,
                 width: int = SEGMENT_WIDTH) -> None:
        self.keys = tuple(keys)
        self.limit = limit
        self.width = width
        self.seen: set[str] = set()

    def of(self, given: Mapping[str, Any] | None, data: Any = None) -> str:
        """The label for segment values ``given`` (headers) or, for a key not given, field ``data[key]``."""
        return self.bound(self.canonical(given, data))

    def canonical(self, given: Mapping[str, Any] | None, data: Any = None) -> str:
        """``k=v,k=v``, unbounded (any thread)."""
        parts = []
        fields = data if isinstance(data, dict) else None
        for key in self.keys:
            value = given.get(key) if given else None
            if value is None and fields is not None:
                value = fields.get(key)
            if value is not None:
                text = str(value)[: self.width]
                if "," in text or "=" in text:  # the separators: keep the label parseable
                    text = text.replace(",", "_").replace("=", "_")
                parts.append(f"{key}={text}")
        return ",".join(parts)

    def bound(self, label: str) -> str:
        """``label`` if it is known or there is room for it, else ``other`` (the event loop only)."""
        if label in self.seen or not label:
            return label
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(label)
        return label


class _Histogram:
    """Counts per bucket (not cumulative: the last one is +Inf), and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0


BudgetRow = tuple[str, str, str, float, float]  # scope, name, period, limit USD, remaining USD


class OnlineStats:
    """A feature's online evaluation scores over the window: sums, and (sum, count) per segment label."""

    __slots__ = ("passed", "samples", "score_sum", "segments")

    def __init__(self) -> None:
        self.samples = 0
        self.passed = 0
        self.score_sum = 0.0
        self.segments: dict[str, tuple[float, int]] = {}


class Metrics:
    """The counters of one gateway (process) and the registry that serves them.

    ``record(call)`` is the per-call hook; ``render(accept)`` answers a scrape. The gauge sources are
    optional callables so that this module needs nothing of the runtime: ``breakers()`` maps
    ``provider/model`` to a state, ``budgets()`` awaits budget rows, ``online(feature, since)`` reads
    online evaluation rows (blocking: it runs in a thread) for the features in ``online_features``;
    ``trace_export_failures()`` counts the span batches tracing could not export (None: no tracing).
    """

    def __init__(
        self,
        segments: Mapping[str, Sequence[str]],
        *,
        breakers: Callable[[], Mapping[str, str]] | None = None,
        budgets: Callable[[], Awaitable[list[BudgetRow]]] | None = None,
        budgets_ttl_s: float = 0.0,
        online: Callable[[str, float], list[dict[str, Any]]] | None = None,
        online_features: Sequence[str] = (),
        trace_export_failures: Callable[[], int | None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.segments = {name: SegmentLabels(keys) for name, keys in segments.items() if keys}
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.durations: dict[tuple[str, str, str], _Histogram] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.attempts: dict[tuple[str, str, str], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.cost_nano: dict[tuple[str, str], int] = {}
        self.cache_hits: dict[tuple[str, str], int] = {}
        self.findings: dict[tuple[str, str, str, str, str], int] = {}
        self.quality: dict[tuple[str, str, str, str], int] = {}  # feature, segment, field, problem
        self.rejections: dict[tuple[str, str], int] = {}  # feature, reason (the error's code)
        self.refusals: dict[tuple[str, str, str, str], int] = {}  # feature, route, segment, how
        self._breakers = breakers
        self._budgets = budgets
        self._budgets_ttl_s = budgets_ttl_s
        self._online = online
        self._online_features = tuple(online_features)
        self._trace_export_failures = trace_export_failures
        self._clock = clock
        self._monotonic = monotonic
        self.breaker_states: dict[str, str] = {}
        self.budget_rows: list[BudgetRow] = []
        self.online_stats: dict[str, OnlineStats] = {}
        self._budgets_at = float("-inf")
        self._online_at = float("-inf")
        self._failed: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    @classmethod
    def for_gateway(cls, gateway: Gateway) -> Metrics:
        """The metrics of ``gateway``: its features' segments, breakers, budgets and online evaluation."""
        from ..economics.quotas import budget_rules

        model = gateway.config.model
        rules = []
        for scope, items in (("feature", gateway.config.features.items()), ("tenant", model.tenants.items())):
            for name, spec in items:
                if spec.budget is not None:
                    b = spec.budget
                    rules += budget_rules(scope, name, usd_per_day=b.usd_per_day,
                                          usd_per_month=b.usd_per_month, hard=b.mode == "hard",
                                          downgrade_at=b.downgrade_at)
        state = gateway.state

        async def budgets() -> list[BudgetRow]:
            if getattr(state, "degraded", False):
                return []  # fail_open answers zeros: a full budget would be a lie
            now = time.time()
            held = [rule.budget(now) for rule in rules]
            async with asyncio.timeout(2.0):
                spent = await state.spent(held)
            return [(r.scope, r.name, r.period, r.usd, max(0.0, r.usd - (s + res) / 1e9))
                    for r, (s, res) in zip(rules, spent, strict=True)]

        def trace_export_failures() -> int | None:
            tracing = getattr(gateway, "tracing", None)  # built after the metrics
            return None if tracing is None else tracing.exports.failures

        return cls(
            {name: spec.segments for name, spec in gateway.config.features.items()},
            breakers=gateway.breaker_states,
            budgets=budgets if rules else None,
            budgets_ttl_s=0.0 if model.state.url == "memory" else SLOW_GAUGES_S,
            online=gateway.store.evals.online,
            online_features=list(getattr(gateway, "online", {})),
            trace_export_failures=trace_export_failures,
        )

    # -- per call ----------------------------------------------------------------------------------

    def record(self, call: Call) -> None:
        """Count a finished call. Never raises: a metrics bug must not break a call (logged once)."""
        try:
            self._record(call, call.elapsed_ms() / 1000.0)
        except Exception as exc:  # noqa: BLE001
            self._fail_once("record", exc)

    def rejected(self, call: Call) -> None:
        """Count a call rejected at admission (``call.error``: no valid key, a key not for the feature).
        Never raises."""
        try:
            error = call.error
            key = (call.feature.name, error_class_name(error) if error is not None else "unknown")
            self.rejections[key] = self.rejections.get(key, 0) + 1
        except Exception as exc:  # noqa: BLE001
            self._fail_once("rejected", exc)

    def _record(self, call: Call, seconds: float) -> None:
        feature = call.feature.name
        route = call.route or "none"
        segments = self.segments.get(feature)
        segment = segments.of(call.metadata.get("segment"), call.input) if segments is not None else ""
        key = (feature, route, call.status, segment)
        self.requests[key] = self.requests.get(key, 0) + 1
        hkey = (feature, route, segment)
        histogram = self.durations.get(hkey)
        if histogram is None:
            histogram = self.durations[hkey] = _Histogram()
        histogram.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram.total += seconds
        if call.error is not None:
            ekey = (feature, error_class_name(call.error))
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        for attempt in call.attempts:
            akey = (feature, f"{attempt.provider}/{attempt.model}", attempt.outcome)
            self.attempts[akey] = self.attempts.get(akey, 0) + 1
        usage = call.usage
        if usage:
            for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
                count = usage.get(field)
                if count:
                    tkey = (feature, route, kind)
                    self.tokens[tkey] = self.tokens.get(tkey, 0) + int(count)
        if call.cost_nano:
            ckey = (feature, route)
            self.cost_nano[ckey] = self.cost_nano.get(ckey, 0) + call.cost_nano
        if call.cache is not None:
            hit = (feature, call.cache)
            self.cache_hits[hit] = self.cache_hits.get(hit, 0) + 1
        for event in call.events:
            if event["kind"] == "finding":
                fkey = (feature, str(event.get("guard")), str(event.get("rule")), str(event.get("severity")),
                        str(event.get("action")))
                self.findings[fkey] = self.findings.get(fkey, 0) + 1
            elif event["kind"] == "refusal":  # the model declined (shipyard/monitor/refusal.py)
                rkey = (feature, route, segment, str(event.get("how")))
                self.refusals[rkey] = self.refusals.get(rkey, 0) + 1
            elif event["kind"] == "quality":  # data quality of the input: bounded by the config's fields
                for problem in event.get("problems") or ():
                    qkey = (feature, segment, str(problem.get("field")), str(problem.get("problem")))
                    self.quality[qkey] = self.quality.get(qkey, 0) + 1

    # -- scrapes -----------------------------------------------------------------------------------

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the scraper's ``Accept`` header asks for (Prometheus text, or OpenMetrics), and
        its content type. The slow gauges are refreshed first; the rendering runs in a thread."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept)
        return await asyncio.to_thread(encoder, self.registry), content_type

    async def refresh(self) -> None:
        """Read the gauges on the event loop (a breaker's state may move as it is read, so it is never read
        from the rendering thread), those that cost a round trip or a query at most as often as they may."""
        if self._breakers is not None:
            try:
                self.breaker_states = dict(self._breakers())
            except Exception as exc:  # noqa: BLE001
                self.breaker_states = {}
                self._fail_once("breakers", exc)
        now = self._monotonic()
        if self._budgets is not None and now - self._budgets_at >= self._budgets_ttl_s:
            self._budgets_at = now
            try:
                self.budget_rows = await self._budgets()
            except Exception as exc:  # noqa: BLE001 - the shared state may be away: no budget gauges
                self.budget_rows = []
                self._fail_once("budgets", exc)
        if self._online is not None and self._online_features and now - self._online_at >= SLOW_GAUGES_S:
            self._online_at = now
            try:
                stats = await asyncio.to_thread(self._read_online)
            except Exception as exc:  # noqa: BLE001 - the store may be down: no score gauges this time
                self.online_stats = {}
                self._fail_once("online", exc)
            else:
                for feature, stat in stats.items():  # bounded here, on the loop, like the calls' labels
                    labels = self.segments.get(feature)
                    bounded: dict[str, list[float]] = {}
                    for segment, (total, count) in stat.segments.items():
                        held = bounded.setdefault(labels.bound(segment) if labels else "", [0.0, 0])
                        held[0] += total
                        held[1] += count
                    stat.segments = {k: (v[0], int(v[1])) for k, v in bounded.items()}
                self.online_stats = stats

    def _read_online(self) -> dict[str, OnlineStats]:
        """The online scores of the window, summed per feature and per segment (in a thread)."""
        assert self._online is not None
        since = self._clock() - ONLINE_WINDOW_S
        out = {}
        for feature in self._online_features:
            labels = self.segments.get(feature)
            stat = out[feature] = OnlineStats()
            for row in self._online(feature, since):
                if row.get("score") is None:
                    continue
                score = float(row["score"])
                stat.samples += 1
                stat.score_sum += score
                stat.passed += 1 if row.get("passed") else 0
                if labels is not None:
                    given = row.get("segment")
                    segment = labels.canonical(given if isinstance(given, dict) else None)
                    total, count = stat.segments.get(segment, (0.0, 0))
                    stat.segments[segment] = (total + score, count + 1)
        return out

    def _fail_once(self, what: str, exc: BaseException) -> None:
        if what not in self._failed:
            self._failed.add(what)
            _log.warning("metrics: %s failed (logged once; calls are not affected): %r", what, exc)

    # -- the collector -----------------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        """Every metric family, from snapshots of the counters (``list(d.items())`` is atomic under the
        GIL, so a scrape rendered in a thread never sees a dict change size under it)."""
        yield _counter("shipyard_requests",
                       "Calls finished, by status (ok, fallback, error, cancelled, client_closed), segment.",
                       ("feature", "route", "status", "segment"), self.requests)
        yield self._durations()
        yield _counter("shipyard_errors", "Calls that ended in an error, by its stable code.",
                       ("feature", "error_type"), self.errors)
        yield _counter("shipyard_attempts",
                       "Tries at a route (provider/model), by outcome (ok, error, skipped, cancelled).",
                       ("feature", "route", "outcome"), self.attempts)
        yield _counter("shipyard_tokens", "Tokens used, reported by the provider or estimated.",
                       ("feature", "route", "kind"), self.tokens)
        yield _counter("shipyard_cost_usd", "What calls cost, in USD.", ("feature", "route"), self.cost_nano,
                       scale=1e-9)
        yield _counter("shipyard_cache_hits", "Calls answered from a cache.", ("feature", "kind"),
                       self.cache_hits)
        yield _counter("shipyard_guard_findings", "Guard findings (pii, injection, policy, output_contract).",
                       ("feature", "guard", "rule", "severity", "action"), self.findings)
        yield _counter("shipyard_quality_problems", "Data-quality problems of arriving inputs, by segment.",
                       ("feature", "segment", "field", "problem"), self.quality)
        yield _counter("shipyard_refusals", "Answers in which the model declined the task, by how that showed: "
                       "content_filter, refusal (the provider's field) or phrase (the answer's opening words).",
                       ("feature", "route", "segment", "how"), self.refusals)
        yield _counter("shipyard_rejected_requests",
                       "Calls rejected at admission, never recorded: reason invalid_api_key (401), forbidden "
                       "(403: a key not for this feature).", ("feature", "reason"), self.rejections)
        if self._trace_export_failures is not None:
            try:
                failures = self._trace_export_failures()
            except Exception as exc:  # noqa: BLE001 - the rest of the scrape stands
                failures = None
                self._fail_once("trace export failures", exc)
            if failures is not None:
                yield _counter("shipyard_trace_export_failures",
                               "Span batches that could not be exported to the OTLP collector (dropped).", (),
                               {(): failures})
        yield from self._gauges()

    def _durations(self) -> Metric:
        family = HistogramMetricFamily("shipyard_request_duration_seconds",
                                       "Time from a call's start to its end (a stream: to its last chunk).",
                                       labels=("feature", "route", "segment"))
        bounds = [repr(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for labels, histogram in list(self.durations.items()):
            counts, total = histogram.counts[:], histogram.total
            running, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric(labels, buckets, total)
        return family

    def _gauges(self) -> Iterable[Metric]:
        if self._breakers is not None:
            breakers = GaugeMetricFamily(
                "shipyard_circuit_breaker_state",
                "1 for the state each route's circuit breaker is in, 0 for the others.",
                labels=("provider", "model", "state"))
            for route, state in sorted(self.breaker_states.items()):
                provider, _, model = route.partition("/")
                for name in BREAKER_STATES:
                    breakers.add_metric((provider, model, name), 1.0 if state == name else 0.0)
            yield breakers
        if self._budgets is not None:
            limit = GaugeMetricFamily("shipyard_budget_limit_usd", "A budget's limit for its current period.",
                                      labels=("scope", "name", "period"))
            remaining = GaugeMetricFamily(
                "shipyard_budget_remaining_usd",
                "What is left of a budget in its current period (spent and reserved taken off).",
                labels=("scope", "name", "period"))
            for scope, name, period, usd, left in self.budget_rows:
                limit.add_metric((scope, name, period), usd)
                remaining.add_metric((scope, name, period), left)
            yield limit
            yield remaining
        if self._online_features:
            yield from self._online_families()

    def _online_families(self) -> Iterable[Metric]:
        window = f"over the last {ONLINE_WINDOW_S / 3600:g} h"
        score = GaugeMetricFamily("shipyard_online_eval_score",
                                  f"Mean weighted score of online evaluation {window}.", labels=("feature",))
        passed = GaugeMetricFamily("shipyard_online_eval_pass_rate",
                                   f"Share of sampled calls that passed every check {window}.",
                                   labels=("feature",))
        samples = GaugeMetricFamily("shipyard_online_eval_samples",
                                    f"Calls scored by online evaluation {window}.", labels=("feature",))
        by_segment = GaugeMetricFamily("shipyard_online_eval_segment_score",
                                       f"Mean weighted score of online evaluation per segment {window}.",
                                       labels=("feature", "segment"))
        for feature, stat in sorted(self.online_stats.items()):
            samples.add_metric((feature,), float(stat.samples))
            if not stat.samples:
                continue
            score.add_metric((feature,), stat.score_sum / stat.samples)
            passed.add_metric((feature,), stat.passed / stat.samples)
            for segment, (total, count) in sorted(stat.segments.items()):
                by_segment.add_metric((feature, segment), total / count)
        yield from (score, passed, samples, by_segment)


def _counter(name: str, doc: str, labels: Sequence[str], values: Mapping[tuple[str, ...], int],
             *, scale: float = 1.0) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in list(values.items()):
        family.add_metric(key, value * scale)
    return family


class _Collector:
    """The registry's view of a ``Metrics``: collected at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # names are not checked for clashes: this registry holds only this collector

    def collect(self) -> Iterable[Metric]:
        return list(self.metrics.families())
