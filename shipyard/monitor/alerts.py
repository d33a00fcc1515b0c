"""Alerts and incidents: every feature watched, every alarm on a named owner.

The server evaluates each feature's alerts every ``monitor.interval_s`` from the recorded traces (shared
by every replica, and surviving restarts):

- **SLO burn rate** (``slo:``): for each ``burn_alerts`` pair of windows, the error rate over each window
  divided by the error budget (``1 - target``); the alert fires when both the long and the short window
  burn at least ``factor`` times too fast (the multiwindow rule of the Google SRE workbook: the long
  window proves it matters, the short one that it is still happening, so it also resolves quickly).
  Availability counts server errors (5xx); latency counts calls slower than ``threshold_ms``. The short
  window needs ``min_calls`` calls before it may fire.
- **Guard**: a critical finding (a policy rule, PII, injection, an output contract that failed for good)
  in the last ``monitor.guard_window``.
- **Drift** (``drift:``): the calls of the last ``window`` against the reference (a file, or a window of
  recorded traffic), every ``every``: fires when the dataset, an outcome (refusal or fallback rate,
  online-eval score) or a segment's dataset drifted.
- **Budgets**, **data quality** and **online evaluation** scores: a share spent, a problem rate, a mean
  score over a window.

A firing alert opens an incident for the feature (one per alert while it is open: replicas that see the
same alert open it once), routed to the owner of the alert's duty: SLO, drift, budget and quality alerts
to ``incidents``, online evaluation to ``evaluation``, guard alerts to ``risk``. When the alert stops firing
the incident is resolved; while there is too little data to judge (fewer calls than ``min_calls``, but
some), an open incident stays open and none is opened. Owners with a webhook get each
opening and resolution as a JSON POST (generic, or Slack's ``{"text"}``), retried with backoff; every
delivery and failure is on the incident's timeline.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..providers._h1 import Pool
from ..units import TRAFFIC, parse_duration, parse_window

_log = logging.getLogger("shipyard.monitor")

DUTY_OF = {"slo": "incidents", "guard": "risk", "drift": "incidents", "quality": "incidents",
           "budget": "incidents", "eval": "evaluation"}


def burn_rate(bad: int, total: int, target: float) -> float:
    """How many times faster than allowed the error budget burns: the bad share over ``1 - target``."""
    if total == 0:
        return 0.0
    return (bad / total) / (1.0 - target)


class Alert:
    """One alert's verdict this round: ``firing`` True, False, or None when there is too little data to
    judge (an open incident stays open, none is opened: thin traffic must not close an ongoing problem's
    incident only to open a new one a round later)."""

    __slots__ = ("details", "duty", "firing", "key", "title")

    def __init__(self, key: str, duty: str, firing: bool | None, title: str, details: dict[str, Any]) -> None:
        self.key, self.duty, self.firing, self.title, self.details = key, duty, firing, title, details


def judged(firing: bool, n: int, needed: int) -> bool | None:
    """A verdict on ``n`` samples where ``needed`` are required: itself with enough, False with none at all
    (nothing is happening, so nothing is wrong), None (cannot tell) in between."""
    if n >= needed:
        return firing
    return False if n == 0 else None


def slo_alerts(name: str, slo: Any, counts: Any, now: float) -> list[Alert]:
    """The burn-rate alerts of one feature; ``counts(since, latency_ms)`` gives window counts."""
    alerts: list[Alert] = []
    objectives = []
    if slo.availability is not None:
        objectives.append(("availability", slo.availability, None, "errors"))
    if slo.latency is not None:
        objectives.append(("latency", slo.latency.target, slo.latency.threshold_ms, "slow"))
    for objective, target, threshold, bad_key in objectives:
        for rule in slo.burn_alerts:
            long_s, short_s = parse_duration(rule.long), parse_duration(rule.short)
            long_c = counts(now - long_s, threshold)
            short_c = counts(now - short_s, threshold)
            long_burn = burn_rate(long_c[bad_key], long_c["total"], target)
            short_burn = burn_rate(short_c[bad_key], short_c["total"], target)
            burning = long_burn >= rule.factor and short_burn >= rule.factor
            firing = judged(burning, short_c["total"], slo.min_calls)
            if firing is None and long_c["total"] >= slo.min_calls and long_burn < rule.factor:
                firing = False  # too few calls lately, but the long window shows the budget is not burning
            what = "errors" if objective == "availability" else f"calls over {threshold:g} ms"
            alerts.append(Alert(
                f"slo:{objective}:{rule.long}/{rule.short}", "incidents", firing,
                f"{name}: {objective} error budget burning {short_burn:.1f}x ({rule.short}) and {long_burn:.1f}x "
                f"({rule.long}), alert at {rule.factor:g}x; {short_c[bad_key]} of {short_c['total']} {what} "
                f"in the last {rule.short}",
                {"objective": objective, "target": target, "factor": rule.factor, "long": rule.long,
                 "short": rule.short, "long_burn": round(long_burn, 3), "short_burn": round(short_burn, 3),
                 "long_counts": long_c, "short_counts": short_c},
            ))
    return alerts


class Notifier:
    """POSTs incident news to an owner's webhook, retried with backoff; each outcome on the timeline."""

    def __init__(self, incidents: Any, *, timeout_s: float, retries: int, base_delay_s: float = 0.25) -> None:
        self.incidents = incidents
        self.timeout_s = timeout_s
        self.retries = retries
        self.base_delay_s = base_delay_s
        self._pools: dict[str, Pool] = {}

    @staticmethod
    def payload(event: str, incident: dict[str, Any], contact: Any) -> bytes:
        verb = {"incident.opened": "opened", "incident.resolved": "resolved"}[event]
        text = (f"[shipyard] incident #{incident['id']} {verb}: {incident['title']} "
                f"(feature {incident['feature']}, {incident['duty']} owner {incident['owner']})")
        if contact.payload_format == "slack":
            return orjson.dumps({"text": text})
        public = {k: incident.get(k) for k in ("id", "feature", "key", "duty", "owner", "status", "title",
                                                "details", "opened_at", "resolved_at")}
        return orjson.dumps({"event": event, "incident": public, "text": text})

    async def deliver(self, event: str, incident: dict[str, Any], contact: Any) -> bool:
        if not contact.webhook:
            return False
        body = self.payload(event, incident, contact)
        url = contact.webhook
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in range(self.retries + 1):
            outcome: dict[str, Any] = {"event": event, "attempt": attempt + 1, "owner": contact.name}
            try:
                pool = self._pools.get(origin) or self._pools.setdefault(origin, Pool(origin))
                async with asyncio.timeout(self.timeout_s):
                    resp = await pool.request("POST", target, b"Content-Type: application/json\r\n", body)
                    await resp.read()
                outcome["status"] = resp.status
                if 200 <= resp.status < 300:
                    await asyncio.to_thread(self.incidents.event, incident["id"], "notified", outcome)
                    return True
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
            await asyncio.to_thread(self.incidents.event, incident["id"], "delivery_failed", outcome)
            if attempt < self.retries:
                await asyncio.sleep(min(30.0, self.base_delay_s * 2 ** attempt))
        _log.warning("incident #%s: %s could not be delivered to %s after %d attempts", incident["id"], event,
                     contact.name, self.retries + 1)
        return False

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


class Monitor:
    """Evaluates every feature's alerts and keeps incidents in step with them."""

    def __init__(self, config: Any, incidents: Any, background: Any, evals: Any = None, store: Any = None) -> None:
        self.config = config
        self.incidents = incidents
        self.evals = evals
        self.store = store
        self._drift: dict[str, tuple[float, Alert]] = {}  # feature -> (when judged, verdict)
        self._references: dict[str, Any] = {}
        self.background = background
        spec = config.model.monitor
        self.notifier = Notifier(incidents, timeout_s=spec.webhook_timeout_s, retries=spec.webhook_retries)

    def alerts(self, now: float) -> list[tuple[str, Alert]]:
        """(feature, alert) for every alert this config defines, with its verdict now (blocking I/O)."""
        out: list[tuple[str, Alert]] = []
        guard_window = parse_duration(self.config.model.monitor.guard_window)
        for name, spec in self.config.model.features.items():
            if spec.slo is not None:
                def counts(since: float, latency_ms: float | None, _n: str = name) -> dict[str, int]:
                    return self.incidents.window_counts(_n, since, latency_ms)

                out.extend((name, a) for a in slo_alerts(name, spec.slo, counts, now))
            if spec.quality is not None:
                q = spec.quality
                c = self.incidents.quality_counts(name, now - parse_duration(q.window))
                rate = c["problems"] / c["total"] if c["total"] else 0.0
                out.append((name, Alert(
                    "quality", "incidents", judged(rate > q.max_problem_rate, c["total"], q.min_calls),
                    f"{name}: {c['problems']} of {c['total']} inputs ({rate:.1%}) with a data-quality problem in "
                    f"the last {q.window}, above {q.max_problem_rate:.1%}",
                    {"problems": c["problems"], "total": c["total"], "rate": round(rate, 4),
                     "max_problem_rate": q.max_problem_rate, "window": q.window},
                )))
            if spec.budget is not None:
                out.extend((name, a) for a in self._budget_alerts(name, spec.budget, now))
            online = spec.eval.online if spec.eval is not None else None
            if online is not None and online.alert_below is not None and self.evals is not None:
                rows = self.evals.online(name, now - parse_duration(online.alert_window))
                scores = [r["score"] for r in rows]
                mean = sum(scores) / len(scores) if scores else None
                firing = judged(mean is not None and mean < online.alert_below, len(scores), online.alert_min_samples)
                out.append((name, Alert(
                    "eval:online", "evaluation", firing,
                    f"{name}: online evaluation score {mean if mean is not None else float('nan'):.3f} over "
                    f"{len(scores)} sampled call(s) in the last {online.alert_window}, below {online.alert_below:g}",
                    {"mean_score": mean, "samples": len(scores), "alert_below": online.alert_below},
                )))
            if spec.drift is not None and self.store is not None:
                alert = self._drift_alert(name, spec.drift, now)
                if alert is not None:
                    out.append((name, alert))
            if spec.guard is not None or spec.output_schema is not None:
                n = self.incidents.severe_findings(name, now - guard_window)
                out.append((name, Alert(
                    "guard:critical", "risk", n > 0,
                    f"{name}: {n} call(s) with a critical guard finding in the last "
                    f"{self.config.model.monitor.guard_window}",
                    {"critical_calls": n, "window": self.config.model.monitor.guard_window},
                )))
        return out

    def _drift_alert(self, name: str, spec: Any, now: float) -> Alert | None:
        """The feature's calls of the last ``window`` against its reference, at most every ``every`` (the
        verdict is kept in between): the whole, and each segment of the feature's ``segments``. Fires when
        the dataset drifted, an outcome (refusal or fallback rate, online-eval score) drifted, or a segment's
        dataset did."""
        from .drift import DriftOptions, compare, compare_segments, table_from_traces

        cached = self._drift.get(name)
        if cached is not None and now - cached[0] < parse_duration(spec.every):
            return cached[1]
        rows = self.store.traffic(feature=name, since=now - parse_duration(spec.window), limit=100_000)
        # Against a file of inputs, a call without stored inputs (sealed, or from before store_content was
        # set) would read as missing values: only the calls with inputs count. A window of traffic has
        # such calls on both sides, and their outcomes count.
        current, _skipped = table_from_traces(rows, inputs_only=not spec.reference.startswith(TRAFFIC))
        reference = self._drift_reference(name, spec, now)
        if isinstance(reference, str):
            alert = Alert("drift", "incidents", None, f"{name}: {reference}", {"reference": spec.reference})
            _log.warning("drift of %s not judged: %s", name, reference)
        elif current.rows < spec.min_rows:
            alert = Alert("drift", "incidents", judged(False, current.rows, spec.min_rows),
                          f"{name}: {current.rows} call(s) in the last {spec.window}, "
                          f"fewer than the {spec.min_rows} drift needs", {"current_rows": current.rows})
        else:
            options = DriftOptions(embeddings=spec.embeddings, workers=1)
            report = compare(reference, current, options=options)
            segments, _notes = compare_segments(reference, current, self.config.model.features[name].segments,
                                                options=options, min_rows=spec.min_rows)
            outcomes = [f for f in report.drifted_fields if f.startswith("outcome.")]
            drifted_segments = [sd.name for sd in segments if sd.drifted]
            what = [f"inputs and outputs ({', '.join(report.drifted_fields)}: {report.drifted_share:.0%} of the "
                    "fields)" if report.drifted else "", f"outcomes ({', '.join(outcomes)})" if outcomes else "",
                    f"segments ({', '.join(drifted_segments)})" if drifted_segments else ""]
            what = [w for w in what if w]
            alert = Alert(
                "drift", "incidents", bool(what),
                f"{name}: drifted from the reference over the last {spec.window}: {'; '.join(what)}" if what
                else f"{name}: no drift over the last {spec.window} ({', '.join(report.drifted_fields) or 'no field'}"
                     f" drifted, {report.drifted_share:.0%} of the fields)",
                {"drifted_fields": report.drifted_fields, "drifted_share": round(report.drifted_share, 4),
                 "drifted_outcomes": outcomes, "drifted_segments": drifted_segments,
                 "reference_rows": report.reference_rows, "current_rows": report.current_rows,
                 "tests": {d["field"]: {k: d.get(k) for k in ("test", "statistic", "threshold", "p_value",
                                                            "reference_n", "current_n")}
                           for d in (f.to_dict() for f in report.fields if f.drifted)}},
            )
        self._drift[name] = (now, alert)
        return alert

    def _drift_reference(self, name: str, spec: Any, now: float) -> Any:
        """The reference table (a file, read once; a fixed traffic window, read once; a moving one, read
        each round), or a string saying why there is none."""
        from .drift import load_table, table_from_traces

        cached = self._references.get(name)
        if cached is not None:
            return cached
        if not spec.reference.startswith(TRAFFIC):
            path = spec.reference if spec.reference.startswith("/") else f"{self.config.base_dir}/{spec.reference}"
            table = self._references[name] = load_table(path)
            return table
        text = spec.reference[len(TRAFFIC):]
        since, until = parse_window(text, now)
        rows = self.store.traffic(feature=name, since=since, until=until, limit=100_000)
        if len(rows) < spec.min_rows:
            days = self.config.model.retention_of(name).traces_days
            return (f"the reference window {text} has {len(rows)} recorded call(s), fewer than the {spec.min_rows} "
                    f"drift needs (traces are kept {days} days: approve a later window, or freeze one into a "
                    "file with shipyard eval dataset add --from-traces)")
        table, _skipped = table_from_traces(rows)
        if parse_window(text, now + 3600) == (since, until):  # fixed dates: the same rows every time
            self._references[name] = table
        return table

    def _budget_alerts(self, name: str, budget: Any, now: float) -> list[Alert]:
        at = self.config.model.monitor.budget_alert_at
        day = now - now % 86400
        month = calendar.timegm((*time.gmtime(now)[:2], 1, 0, 0, 0))
        out = []
        for period, limit, since in (("day", budget.usd_per_day, day), ("month", budget.usd_per_month, month)):
            if limit is None or limit <= 0:
                continue
            spent = self.incidents.spent_usd(name, since)
            out.append(Alert(
                f"budget:{period}", "incidents", spent >= at * limit,
                f"{name}: spent ${spent:.2f} of its ${limit:g} {period}ly budget ({spent / limit:.0%}; "
                f"alert at {at:.0%})",
                {"period": period, "spent_usd": round(spent, 6), "limit_usd": limit, "alert_at": at},
            ))
        return out

    async def evaluate(self, now: float | None = None) -> list[dict[str, Any]]:
        """One round: open incidents for alerts that fire, resolve those that stopped. Returns what changed."""
        now = time.time() if now is None else now
        changes: list[dict[str, Any]] = []
        verdicts = await asyncio.to_thread(self.alerts, now)
        for feature, alert in verdicts:
            change = await self.settle(feature, alert)
            if change is not None:
                changes.append(change)
        return changes

    async def settle(self, feature: str, alert: Alert, *, by: str = "monitor",
                     wait: bool = False) -> dict[str, Any] | None:
        """Bring the feature's incident for this alert in step with its verdict: open one (and notify the
        duty's owner) when it fires and none is open; resolve the open one (and notify) when it stopped.
        ``wait``: deliver before returning (a command that exits next), instead of in the background."""
        contact = self.config.model.features[feature].owners.contact(alert.duty)
        existing = await asyncio.to_thread(self.incidents.find_open, feature, alert.key)
        if alert.firing is None:
            return None  # too little data to judge: whatever is open stays open
        if alert.firing and existing is None:
            incident = await asyncio.to_thread(
                self.incidents.open, feature=feature, key=alert.key, duty=alert.duty, owner=contact.name,
                title=alert.title, details=alert.details,
            )
            if incident is None:  # another replica opened it a moment ago
                return None
            change, event = {"opened": incident["id"], "feature": feature, "key": alert.key}, "incident.opened"
        elif not alert.firing and existing is not None:
            if not await asyncio.to_thread(self.incidents.transition, existing["id"], "resolved",
                                           {"by": by, "details": alert.details}):
                return None
            incident = await asyncio.to_thread(self.incidents.get, existing["id"])
            change, event = {"resolved": existing["id"], "feature": feature, "key": alert.key}, "incident.resolved"
        else:
            return None  # firing and already open (deduplicated), or quiet and nothing open
        delivery = self.notifier.deliver(event, incident, contact)
        if wait:
            await delivery
        else:
            self.background.spawn(delivery)
        return change
