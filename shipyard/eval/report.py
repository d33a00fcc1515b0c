"""A run's results for people and for machines: a terminal view (rich tables), a JSON document, one
self-contained HTML file, and JUnit XML for CI.

Every string that came from a dataset or a model (case ids, segments, outputs, error messages, check
details) is untrusted: the terminal view renders it as plain text (never as rich markup), the HTML
escapes it with :func:`html.escape`, the JUnit XML is built with ElementTree and stripped of the
characters XML 1.0 cannot carry. The HTML has no script and loads nothing: it works offline and from
an e-mail attachment. These functions return values; writing them to files is the caller's business.
"""

from __future__ import annotations

import html as _html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .gate import GateResult

__all__ = ["html", "junit", "terminal", "to_json"]

_MAX_OUTPUT_CHARS = 400
_MAX_CASES_SHOWN = 200
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# ---------------------------------------------------------------------------------------------- numbers


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ci(block: Mapping[str, Any], pct: bool = False) -> str:
    low, high = block.get("low"), block.get("high")
    if low is None or high is None:
        return "-"
    if pct:
        return f"{low * 100:.1f}-{high * 100:.1f}%"
    return f"{low:.2f}-{high:.2f}"


def _rate(block: Mapping[str, Any]) -> str:
    return f"{_pct(block.get('value'))} ({block.get('k', 0)}/{block.get('n', 0)})"


def _conf(summary: Mapping[str, Any]) -> str:
    return f"{round(summary.get('confidence', 0.95) * 100):g}% CI"


def _rule_status(rule: Any) -> str:
    return "SKIP" if rule.skipped else ("PASS" if rule.passed else "FAIL")


def _output_text(attempt: Mapping[str, Any]) -> str:
    if attempt.get("error"):
        return f"error: {attempt['error']}"
    value = attempt.get("output")
    text = attempt.get("text") if value is None else json.dumps(value, ensure_ascii=False, default=str)
    text = "" if text is None else str(text)
    return text if len(text) <= _MAX_OUTPUT_CHARS else text[:_MAX_OUTPUT_CHARS] + "…"


def _failing_attempt(run_case: Mapping[str, Any], judged: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first attempt that failed (what a reader wants to see), else the first attempt."""
    attempts = run_case.get("attempts") or []
    for raw, verdict in zip(attempts, judged["attempts"], strict=False):
        if not verdict["passed"]:
            return raw
    return attempts[0] if attempts else {}


# -------------------------------------------------------------------------------------------- terminal


def terminal(
    summary: Mapping[str, Any],
    gate_result: GateResult | None = None,
    comparison: Mapping[str, Any] | None = None,
    console: Console | None = None,
) -> None:
    """Print the summary (overall, segments, checks, failing cases), a comparison and the gate's rules."""
    console = console or Console()
    conf = _conf(summary)
    title = Text(f"{summary.get('feature') or '?'} · run {summary.get('run_id') or '?'}")
    if summary.get("release"):
        title.append(f" · release {summary['release']}")
    console.print(title, style="bold")

    overall = Table(title="Overall", title_justify="left")
    overall.add_column("metric")
    overall.add_column("value", justify="right")
    overall.add_column(conf, justify="right")
    overall.add_row("pass rate", _rate(summary["pass_rate"]), _ci(summary["pass_rate"], pct=True))
    overall.add_row("weighted score", _num(summary["weighted_score"]["value"]), _ci(summary["weighted_score"]))
    consistency = summary["consistency"]
    overall.add_row("consistency", _pct(consistency["value"]), _ci(consistency, pct=True))
    overall.add_row("all attempts agree", _pct(consistency.get("all_agree")), "")
    overall.add_row("critical failures", Text(str(len(summary["critical_failures"]))), "")
    latency = summary["latency_ms"]
    overall.add_row("latency p50 / p95", f"{_num(latency['p50'], 0)} / {_num(latency['p95'], 0)} ms", "")
    cost = summary["cost_usd"]
    cost_text = "-" if cost["total"] is None else f"${cost['total']:.4f}"
    if cost["missing"]:
        cost_text += f" ({cost['missing']} attempts unpriced)"
    overall.add_row("cost", cost_text, "")
    console.print(overall)
    if not summary.get("enough", True):
        console.print(Text(f"only {summary['n_cases']} cases: the intervals are wide", style="yellow"))

    if summary["segments"]:
        segments = Table(title="Segments", title_justify="left")
        for name, justify in (("segment", "left"), ("n", "right"), ("pass rate", "right"), (conf, "right"),
                              ("weighted score", "right"), (conf, "right"), ("note", "left")):
            segments.add_column(name, justify=justify)  # type: ignore[arg-type]
        for label, seg in summary["segments"].items():
            segments.add_row(
                Text(label), str(seg["n"]), _rate(seg["pass_rate"]), _ci(seg["pass_rate"], pct=True),
                _num(seg["weighted_score"]["value"]), _ci(seg["weighted_score"]), Text(seg["note"] or ""),
                style=None if seg["enough"] else "dim",
            )
        console.print(segments)

    if summary["checks"]:
        checks = Table(title="Checks", title_justify="left")
        for name, justify in (("check", "left"), ("severity", "left"), ("weight", "right"),
                              ("cases passing", "right"), (conf, "right"), ("attempts passing", "right")):
            checks.add_column(name, justify=justify)  # type: ignore[arg-type]
        for name, check in summary["checks"].items():
            checks.add_row(
                Text(name), Text(check["severity"] or "-"), f"{check['weight']:g}", _rate(check["pass_rate"]),
                _ci(check["pass_rate"], pct=True), _pct(check["attempt_pass_rate"]),
            )
        console.print(checks)

    failing = [c for c in summary["cases"] if not c["passed"]]
    if failing:
        cases = Table(title=f"Failing cases ({len(failing)})", title_justify="left")
        for name in ("case", "score", "failed checks", "errors"):
            cases.add_column(name)
        for case in failing[:_MAX_CASES_SHOWN]:
            cases.add_row(
                Text(str(case["id"]) + (" (critical)" if case["critical_failed"] else ""),
                     style="red" if case["critical_failed"] else ""),
                _num(case["score"]), Text(", ".join(case["failed_checks"])), Text("; ".join(case["errors"])),
            )
        console.print(cases)
        if len(failing) > _MAX_CASES_SHOWN:
            console.print(f"… and {len(failing) - _MAX_CASES_SHOWN} more (see the JSON report)")

    if comparison is not None:
        _terminal_comparison(comparison, console)

    if gate_result is not None:
        gate = Table(title="Gate", title_justify="left")
        gate.add_column("rule")
        gate.add_column("result")
        gate.add_column("detail")
        colours = {"PASS": "green", "FAIL": "bold red", "SKIP": "yellow"}
        for rule in gate_result.rules:
            status = _rule_status(rule)
            gate.add_row(rule.rule, Text(status, style=colours[status]), Text(rule.message))
        console.print(gate)
        console.print(Text(f"gate {'PASSED' if gate_result.passed else 'FAILED'}",
                           style="bold green" if gate_result.passed else "bold red"))


def _terminal_comparison(comparison: Mapping[str, Any], console: Console) -> None:
    counts = comparison["counts"]
    table = Table(title=f"Against baseline {comparison['baseline'].get('run_id') or '?'}", title_justify="left")
    table.add_column("measure")
    table.add_column("change", justify="right")
    table.add_row("pass rate", _signed_pct(comparison["pass_rate_delta"]))
    delta = comparison["score_delta"]
    if delta["mean"] is not None:
        table.add_row("weighted score",
                      f"{delta['mean']:+.3f} (95% CI {delta['low']:+.3f} to {delta['high']:+.3f})")
    table.add_row("fixed / broken", f"{counts['fixed']} / {counts['broken']} of {counts['common']}")
    table.add_row("McNemar p / bootstrap p", f"{comparison['p_value']:.3g} / {comparison['score_p_value']:.3g}")
    verdict = ("significant regression" if comparison["regression"] else
               "significant improvement" if comparison["improvement"] else "no significant change")
    table.add_row("verdict", Text(verdict, style="bold red" if comparison["regression"] else ""))
    console.print(table)
    for warning in comparison.get("warnings", []):
        console.print(Text(f"warning: {warning}", style="yellow"))


def _signed_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f} pts"


# ------------------------------------------------------------------------------------------------ JSON


def to_json(
    run: Mapping[str, Any],
    summary: Mapping[str, Any],
    gate_result: GateResult | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything in one JSON-ready dict: the run's metadata, the summary's numbers, the gate, the
    comparison, and every case with its attempts (output, text, latency, cost, error, trace id and every
    check's verdict) beside the judged results."""
    cases = []
    for raw, judged in zip(run["cases"], summary["cases"], strict=True):
        attempts = [
            {**dict(a), "passed": v["passed"], "score": v["score"], "failed_checks": v["failed_checks"]}
            for a, v in zip(raw.get("attempts") or [], judged["attempts"], strict=True)
        ]
        extra = {k: v for k, v in raw.items() if k != "attempts"}
        cases.append({**extra, **{k: v for k, v in judged.items() if k != "attempts"}, "attempts": attempts})
    meta = ("run_id", "feature", "release", "dataset", "started_at", "finished_at", "repeat", "checks")
    numbers = ("confidence", "min_cases", "n_cases", "enough", "pass_rate", "weighted_score", "consistency",
               "critical_failures", "segments", "checks", "latency_ms", "cost_usd")
    return {
        **{k: run.get(k) for k in meta},
        "declared_checks": run.get("checks"),
        **{k: summary[k] for k in numbers},
        "gate": None if gate_result is None else gate_result.model_dump(),
        "comparison": None if comparison is None else dict(comparison),
        "cases": cases,
    }


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
margin:2rem auto;max-width:1100px;padding:0 1rem}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.8rem 0 .6rem}
.meta{color:#5b6475}.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{border:1px solid #d9dde5;border-radius:6px;padding:.6rem .9rem;min-width:9rem}
.card b{display:block;font-size:1.35rem}.card span{color:#5b6475;font-size:.85rem}
.verdict{display:inline-block;padding:.3rem .8rem;border-radius:4px;font-weight:600;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}.skip{background:#9e9e9e}
table{border-collapse:collapse;width:100%;margin:.4rem 0}
th,td{border-bottom:1px solid #e3e6ec;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f9}td.num{text-align:right;white-space:nowrap}
tr.dim td{color:#8a919e}td.out{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
white-space:pre-wrap;word-break:break-word;max-width:28rem}
.status-PASS{color:#2e7d32;font-weight:600}.status-FAIL{color:#c62828;font-weight:600}
.status-SKIP{color:#8a6d00;font-weight:600}.note{color:#8a6d00}
"""


def _e(value: Any) -> str:
    """Untrusted text for HTML: escaped, and without the control characters HTML has no use for."""
    return _html.escape(_XML_ILLEGAL.sub("", "" if value is None else str(value)), quote=True)


def html(
    run: Mapping[str, Any],
    summary: Mapping[str, Any],
    gate_result: GateResult | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> str:
    """One self-contained HTML page: headline numbers, the gate's verdict, a per-segment chart (inline
    SVG), the per-check table, the comparison and the failing cases. No script, no external resource."""
    conf = _conf(summary)
    title = f"{summary.get('feature') or 'evaluation'} — run {summary.get('run_id') or '?'}"
    meta = [f"dataset {summary.get('dataset') or '-'}", f"{summary['n_cases']} cases",
            f"repeat {summary.get('repeat') or 1}"]
    if summary.get("release"):
        meta.insert(0, f"release {summary['release']}")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(" · ".join(meta))}</p>',
    ]
    if gate_result is not None:
        cls, word = ("pass", "GATE PASSED") if gate_result.passed else ("fail", "GATE FAILED")
        out.append(f'<p><span class="verdict {cls}">{word}</span></p>')
    pass_rate, score, consistency = summary["pass_rate"], summary["weighted_score"], summary["consistency"]
    cost = summary["cost_usd"]
    cards = [
        ("pass rate", _pct(pass_rate["value"]), f"{pass_rate['k']}/{pass_rate['n']} · {conf} {_ci(pass_rate, True)}"),
        ("weighted score", _num(score["value"]), f"{conf} {_ci(score)}"),
        ("consistency", _pct(consistency["value"]), f"all attempts agree: {_pct(consistency.get('all_agree'))}"),
        ("critical failures", str(len(summary["critical_failures"])), ""),
        ("latency p50 / p95", f"{_num(summary['latency_ms']['p50'], 0)} / {_num(summary['latency_ms']['p95'], 0)}",
         "ms"),
        ("cost", "-" if cost["total"] is None else f"${cost['total']:.4f}",
         f"{cost['missing']} attempts unpriced" if cost["missing"] else "USD"),
    ]
    out.append('<div class="cards">')
    for label, value, sub in cards:
        out.append(f'<div class="card"><span>{_e(label)}</span><b>{_e(value)}</b><span>{_e(sub)}</span></div>')
    out.append("</div>")
    if not summary.get("enough", True):
        out.append(f'<p class="note">Only {summary["n_cases"]} cases: the intervals are wide.</p>')

    if gate_result is not None:
        out.append("<h2>Gate</h2><table><tr><th>rule</th><th>result</th><th>detail</th></tr>")
        for rule in gate_result.rules:
            status = _rule_status(rule)
            culprits = f" — cases: {', '.join(rule.cases[:20])}" if rule.cases else ""
            out.append(f"<tr><td>{_e(rule.rule)}</td><td class=\"status-{status}\">{status}</td>"
                       f"<td>{_e(rule.message + culprits)}</td></tr>")
        out.append("</table>")

    if summary["segments"]:
        out.append(f"<h2>Weighted score by segment ({_e(conf)})</h2>")
        out.append(_segment_chart(summary))
        out.append("<table><tr><th>segment</th><th>n</th><th>pass rate</th>"
                   f"<th>{_e(conf)}</th><th>weighted score</th><th>{_e(conf)}</th><th>note</th></tr>")
        for label, seg in summary["segments"].items():
            row_class = "" if seg["enough"] else ' class="dim"'
            out.append(
                f'<tr{row_class}><td>{_e(label)}</td><td class="num">{seg["n"]}</td>'
                f'<td class="num">{_e(_rate(seg["pass_rate"]))}</td><td class="num">{_e(_ci(seg["pass_rate"], True))}</td>'
                f'<td class="num">{_e(_num(seg["weighted_score"]["value"]))}</td>'
                f'<td class="num">{_e(_ci(seg["weighted_score"]))}</td><td>{_e(seg["note"] or "")}</td></tr>'
            )
        out.append("</table>")

    if summary["checks"]:
        out.append("<h2>Checks</h2><table><tr><th>check</th><th>type</th><th>severity</th><th>weight</th>"
                   f"<th>cases passing</th><th>{_e(conf)}</th><th>attempts passing</th></tr>")
        for name, check in summary["checks"].items():
            out.append(
                f"<tr><td>{_e(name)}</td><td>{_e(check['type'] or '-')}</td><td>{_e(check['severity'] or '-')}</td>"
                f'<td class="num">{check["weight"]:g}</td><td class="num">{_e(_rate(check["pass_rate"]))}</td>'
                f'<td class="num">{_e(_ci(check["pass_rate"], True))}</td>'
                f'<td class="num">{_e(_pct(check["attempt_pass_rate"]))}</td></tr>'
            )
        out.append("</table>")

    if comparison is not None:
        out.append(_html_comparison(comparison))

    failing = [(raw, c) for raw, c in zip(run["cases"], summary["cases"], strict=True) if not c["passed"]]
    out.append(f"<h2>Failing cases ({len(failing)})</h2>")
    if failing:
        out.append("<table><tr><th>case</th><th>segment</th><th>score</th><th>failed checks</th>"
                   "<th>errors</th><th>output (first failing attempt)</th></tr>")
        for raw, case in failing[:_MAX_CASES_SHOWN]:
            segment = ", ".join(f"{k}={v}" for k, v in case["segment"].items())
            critical = " <b>(critical)</b>" if case["critical_failed"] else ""
            out.append(
                f"<tr><td>{_e(case['id'])}{critical}</td><td>{_e(segment)}</td>"
                f'<td class="num">{_num(case["score"])}</td><td>{_e(", ".join(case["failed_checks"]))}</td>'
                f"<td>{_e('; '.join(case['errors']))}</td>"
                f'<td class="out">{_e(_output_text(_failing_attempt(raw, case)))}</td></tr>'
            )
        out.append("</table>")
        if len(failing) > _MAX_CASES_SHOWN:
            out.append(f"<p>… and {len(failing) - _MAX_CASES_SHOWN} more (see the JSON report).</p>")
    else:
        out.append("<p>None.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def _segment_chart(summary: Mapping[str, Any]) -> str:
    """Horizontal bars (weighted score) with interval whiskers; segments without enough cases grey."""
    rows: list[tuple[str, Mapping[str, Any], bool, str | None]] = [
        ("all cases", summary["weighted_score"], bool(summary.get("enough", True)), None)
    ]
    rows += [(label, seg["weighted_score"], seg["enough"], seg["note"]) for label, seg in summary["segments"].items()]
    label_w, bar_w, text_w, row_h = 170, 420, 330, 26
    width, height = label_w + bar_w + text_w, 24 + row_h * len(rows)
    parts = [(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' role="img" aria-label="weighted score by segment" font-family="system-ui,sans-serif" font-size="12">'
    )]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = label_w + tick * bar_w
        parts.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" stroke="#e3e6ec"/>'
                     f'<text x="{x:.1f}" y="10" text-anchor="middle" fill="#5b6475">{tick:g}</text>')
    for i, (label, block, is_enough, note) in enumerate(rows):
        y = 18 + i * row_h
        value = block.get("value") or 0.0
        colour = "#4c78a8" if is_enough else "#c4c8cf"
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end"><title>{_e(label)}</title>'
                     f"{_e(shown)}</text>")
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{value * bar_w:.1f}" height="{row_h - 8}" '
                     f'fill="{colour}"/>')
        low, high = block.get("low"), block.get("high")
        if is_enough and low is not None and high is not None:
            x1, x2, mid = label_w + low * bar_w, label_w + high * bar_w, y + row_h / 2 - 1
            parts.append(f'<path d="M{x1:.1f} {mid:.1f}H{x2:.1f}M{x1:.1f} {mid - 5:.1f}V{mid + 5:.1f}'
                         f'M{x2:.1f} {mid - 5:.1f}V{mid + 5:.1f}" stroke="#1d2330" stroke-width="1.5" fill="none"/>')
        text = _num(block.get("value"))
        if is_enough and low is not None and high is not None:
            text += f" ({low:.2f}-{high:.2f})"
        if note:
            text += f" — {note}"
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 14}" fill="{"#1d2330" if is_enough else "#8a919e"}">'
                     f"{_e(text)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _html_comparison(comparison: Mapping[str, Any]) -> str:
    counts, delta = comparison["counts"], comparison["score_delta"]
    verdict = ("significant regression" if comparison["regression"] else
               "significant improvement" if comparison["improvement"] else "no significant change")
    rows = [
        ("baseline run", comparison["baseline"].get("run_id") or "-"),
        ("pass rate change", _signed_pct(comparison["pass_rate_delta"])),
        ("weighted score change", "-" if delta["mean"] is None else
         f"{delta['mean']:+.3f} (95% CI {delta['low']:+.3f} to {delta['high']:+.3f})"),
        ("fixed / broken", f"{counts['fixed']} / {counts['broken']} of {counts['common']} common cases"),
        ("only in baseline / only in this run", f"{counts['only_baseline']} / {counts['only_candidate']}"),
        ("McNemar p / bootstrap p", f"{comparison['p_value']:.3g} / {comparison['score_p_value']:.3g}"),
        ("verdict", verdict),
    ]
    out = ["<h2>Against the baseline</h2><table>"]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    for warning in comparison.get("warnings", []):
        out.append(f'<p class="note">{_e(warning)}</p>')
    changed = [c for c in comparison["cases"] if c["change"] in ("broken", "fixed")]
    if changed:
        out.append("<table><tr><th>case</th><th>change</th><th>baseline score</th><th>score</th></tr>")
        for c in changed[:_MAX_CASES_SHOWN]:
            out.append(f"<tr><td>{_e(c['id'])}</td><td>{_e(c['change'])}</td>"
                       f'<td class="num">{_num(c["baseline_score"])}</td><td class="num">{_num(c["candidate_score"])}</td></tr>')
        out.append("</table>")
    return "".join(out)


# ----------------------------------------------------------------------------------------------- JUnit


def _x(value: Any) -> str:
    """Text XML 1.0 can carry: control characters and lone surrogates dropped (ElementTree escapes the rest)."""
    return _XML_ILLEGAL.sub("", "" if value is None else str(value))


def junit(run: Mapping[str, Any], summary: Mapping[str, Any], gate_result: GateResult | None = None) -> str:
    """JUnit XML: one testsuite for the run's feature, one testcase per case (a ``failure`` naming the
    failed checks and errors when it failed), and one testcase per gate rule (``failure`` when the rule
    failed, ``skipped`` when it was not judged)."""
    feature = _x(summary.get("feature") or run.get("feature") or "feature")
    suites = ET.Element("testsuites", name=f"shipyard eval {feature}")
    suite = ET.SubElement(suites, "testsuite", name=feature)
    props = ET.SubElement(suite, "properties")
    for name in ("run_id", "release", "dataset", "repeat"):
        if summary.get(name) is not None:
            ET.SubElement(props, "property", name=name, value=_x(summary[name]))
    ET.SubElement(props, "property", name="pass_rate", value=_x(summary["pass_rate"]["value"]))
    ET.SubElement(props, "property", name="weighted_score", value=_x(summary["weighted_score"]["value"]))
    tests = failures = skipped = 0
    total_time = 0.0
    for raw, case in zip(run["cases"], summary["cases"], strict=True):
        latencies = [a["latency_ms"] for a in raw.get("attempts") or [] if a.get("latency_ms") is not None]
        seconds = sum(latencies) / len(latencies) / 1000 if latencies else 0.0
        total_time += seconds
        element = ET.SubElement(suite, "testcase", classname=feature, name=_x(case["id"]), time=f"{seconds:.3f}")
        tests += 1
        if case["passed"]:
            continue
        failures += 1
        element.append(_case_failure(raw, case))
    if gate_result is not None:
        for rule in gate_result.rules:
            element = ET.SubElement(suite, "testcase", classname=f"{feature}.gate", name=_x(rule.rule), time="0")
            tests += 1
            if rule.skipped:
                skipped += 1
                ET.SubElement(element, "skipped", message=_x(rule.message))
            elif not rule.passed:
                failures += 1
                failure = ET.SubElement(element, "failure", message=_x(rule.message), type="gate")
                if rule.cases:
                    failure.text = _x("cases: " + ", ".join(rule.cases))
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", f"{total_time:.3f}")
    for key in ("tests", "failures", "errors", "skipped", "time"):
        suites.set(key, suite.get(key, "0"))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _case_failure(raw: Mapping[str, Any], case: Mapping[str, Any]) -> ET.Element:
    reasons = []
    if case["failed_checks"]:
        reasons.append("failed checks: " + ", ".join(case["failed_checks"]))
    if case["errors"]:
        reasons.append("errors: " + "; ".join(case["errors"]))
    failure = ET.Element("failure", message=_x(" | ".join(reasons) or "failed"),
                         type="critical" if case["critical_failed"] else "check")
    lines = []
    for i, (attempt, verdict) in enumerate(zip(raw.get("attempts") or [], case["attempts"], strict=True), 1):
        state = "passed" if verdict["passed"] else "FAILED"
        lines.append(f"attempt {i}: {state}, score {verdict['score']:.2f}")
        if attempt.get("error"):
            lines.append(f"  error: {attempt['error']}")
        for name in verdict["failed_checks"]:
            detail = ((attempt.get("checks") or {}).get(name) or {}).get("detail")
            lines.append(f"  {name}: {detail if detail is not None else 'no result'}")
        if not verdict["passed"]:
            lines.append(f"  output: {_output_text(attempt)}")
    failure.text = _x("\n".join(lines))
    return failure
