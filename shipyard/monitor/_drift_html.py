"""A drift report as one HTML file: no script, no link, nothing fetched; an inline SVG histogram per field
(reference against current). Every name and value that came from data is escaped."""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .drift import Check, DriftReport, FieldDrift

__all__ = ["render"]

_REF, _CUR = "#4c78a8", "#f58518"
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin:1.6em 0 .3em}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}
.yes{color:#b00020;font-weight:600}.no{color:#2e7d32}.verdict{padding:.6em 1em;border-radius:6px;margin:1em 0}
.verdict.yes{background:#fdecea}.verdict.no{background:#edf7ed}.info{color:#777;font-style:italic}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def render(report: DriftReport, *, title: str, reference: str, current: str) -> str:
    """The whole page. ``title``, ``reference`` and ``current`` are shown as text (escaped)."""
    drifted = report.drifted_fields
    compared = len(report.compared)
    verdict = "yes" if report.any_drifted else "no"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        (f"<p class=muted>reference: {_e(reference)} ({report.reference_rows:,} rows)<br>"
         f"current: {_e(current)} ({report.current_rows:,} rows)<br>"
         f"made {_e(dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S'))} in {report.seconds:.2f} s</p>"),
        f"<div class='verdict {verdict}'><b>{len(drifted)} of {compared} field{'s' if compared != 1 else ''} "
        f"drifted</b> ({report.drifted_share:.0%})"
        + (f": {_e(', '.join(drifted))}" if drifted else "")
        + f". Dataset drift: <b>{'yes' if report.drifted else 'no'}</b> "
        f"(when at least {report.dataset_share:.0%} of the fields drift).</div>",
    ]
    if report.notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("<table><tr><th>field</th><th>type</th><th>test</th><th>statistic</th><th>threshold</th>"
                 "<th>p-value</th><th>n ref</th><th>n cur</th><th>drifted</th></tr>")
    for f in report.fields:
        head = f.headline
        parts.append(
            f"<tr><td><a href='#f-{_anchor(f.field)}'>{_e(f.field)}</a></td><td>{_e(f.type)}</td>"
            + (_check_cells(head) if head else "<td colspan=6 class=muted>not compared</td>")
            + f"<td class={'yes' if f.drifted else 'no'}>{'yes' if f.drifted else 'no'}</td></tr>"
        )
    parts.append("</table>")
    if report.segments:
        parts.append(_segments(report))
    for f in report.fields:
        parts.append(_field_section(f))
    parts.append("<p class=muted>Rules: " + _e(", ".join(f"{k}={v}" for k, v in report.rules.items()))
                 + ". See shipyard/monitor/drift.py for how each test is chosen.</p></body></html>")
    return "\n".join(parts)


def _segments(report: DriftReport) -> str:
    """Per segment: its rows, the fields that drifted within it, and its dataset verdict."""
    out = [("<h2>By segment</h2><p class=muted>A segment drifts when at least "
           f"{report.dataset_share:.0%} of its fields do (the dataset rule, within the segment).</p>"),
           ("<table><tr><th>segment</th><th>n ref</th><th>n cur</th><th>drifted fields</th><th>share</th>"
           "<th>dataset drift</th></tr>")]
    for sd in report.segments:
        r = sd.report
        verdict = ("<td class=yes>yes</td>" if sd.drifted else "<td class=no>no</td>") if r \
            else "<td class=muted>-</td>"
        out.append(f"<tr><td>{_e(sd.name)}</td><td class=n>{sd.reference_rows:,}</td>"
                   f"<td class=n>{sd.current_rows:,}</td>"
                   + (f"<td>{_e(', '.join(r.drifted_fields))}</td><td class=n>{r.drifted_share:.0%}</td>" if r
                      else f"<td colspan=2 class=muted>{_e(sd.note)}</td>")
                   + verdict + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _anchor(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name)


def _check_cells(c: Check) -> str:
    threshold = ("p &lt; " if c.threshold_on == "p_value" else "&ge; ") + _n(c.threshold, 3)
    return (f"<td>{_e(c.name)}</td><td class=n>{_n(c.statistic)}</td><td class=n>{threshold}</td>"
            f"<td class=n>{_n(c.p_value, 3)}</td><td class=n>{c.reference_n:,}</td><td class=n>{c.current_n:,}</td>")


def _field_section(f: FieldDrift) -> str:
    heading = (f"<h2 id='f-{_anchor(f.field)}'>{_e(f.field)} "
               f"<span class=muted>({_e(f.type)}: {_e(f.type_source)})</span></h2>")
    out = [heading]
    missing = (f"missing: {f.reference_missing:,} of {f.reference_rows:,} in the reference, "
               f"{f.current_missing:,} of {f.current_rows:,} in the current table")
    out.append(f"<p class=muted>{_e(missing)}</p>")
    if f.checks:
        out.append("<table><tr><th>check</th><th>statistic</th><th>threshold</th><th>p-value</th><th>n ref</th>"
                   "<th>n cur</th><th>drifted</th><th>detail</th></tr>")
        for c in f.checks:
            mark = ("yes" if c.drifted else "no") if c.decisive else "info"
            label = "yes" if c.drifted else "no"
            shown = label if c.decisive else f"({label}; reported, does not decide)"
            out.append(f"<tr>{_check_cells(c)}<td class={mark}>{_e(shown)}</td>"
                       f"<td class=muted>{_e(_detail(c.detail))}</td></tr>")
        out.append("</table>")
    for note in f.notes:
        out.append(f"<p class=info>{_e(note)}</p>")
    if f.histogram:
        out.append(_svg(f.histogram))
    return "\n".join(out)


def _detail(detail: Mapping[str, Any]) -> str:
    def show(v: Any) -> str:
        if isinstance(v, float):
            return _n(v)
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{k}: {show(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(show(x) for x in v) + "]"
        return str(v)

    return "; ".join(f"{k}: {show(v)}" for k, v in detail.items())


def _svg(histogram: Mapping[str, Any]) -> str:
    legend = (f"<div class='legend muted'><span style='background:{_REF}'></span>reference"
              f"<span style='background:{_CUR}'></span>current"
              + (f" &nbsp; ({_e(histogram['of'])})" if histogram.get("of") else "") + "</div>")
    if histogram["kind"] == "categories":
        return legend + _category_bars(histogram["labels"], histogram["reference"], histogram["current"])
    return legend + _bin_bars(histogram["edges"], histogram["reference"], histogram["current"])


def _bin_bars(edges: Sequence[float | None], ref: Sequence[float], cur: Sequence[float]) -> str:
    width, height, pad = 640, 170, 24
    top = max([*ref, *cur, 1e-9])
    slot = (width - 2 * pad) / max(len(ref), 1)
    bars = []
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        x = pad + i * slot
        for j, (share, color) in enumerate(((r, _REF), (c, _CUR))):
            h = (height - 2 * pad) * share / top
            bars.append(f"<rect x='{x + 1 + j * (slot - 2) / 2:.1f}' y='{height - pad - h:.1f}' "
                        f"width='{max((slot - 2) / 2, 0.5):.1f}' height='{h:.1f}' fill='{color}'>"
                        f"<title>{_e(_n(edges[i]))} to {_e(_n(edges[i + 1]))}: reference {r:.1%}, current {c:.1%}"
                        "</title></rect>")
    ticks = "".join(
        f"<text x='{pad + k * slot:.1f}' y='{height - 6}' font-size='11' text-anchor='middle' fill='#555'>"
        f"{_e(_n(edges[k], 3))}</text>" for k in (0, len(ref) // 2, len(ref))
    )
    axis = f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#999'/>"
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"
            + "".join(bars) + axis + ticks + "</svg>")


def _category_bars(labels: Sequence[str], ref: Sequence[float], cur: Sequence[float]) -> str:
    row, label_w, width = 22, 190, 640
    height = row * len(labels) + 8
    top = max([*ref, *cur, 1e-9])
    span = width - label_w - 60
    items = []
    for i, (name, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        y = 4 + i * row
        text = name if len(name) <= 28 else name[:27] + "…"
        items.append(f"<text x='{label_w - 6}' y='{y + 14}' font-size='12' text-anchor='end' fill='#333'>"
                     f"{_e(text)}<title>{_e(name)}</title></text>")
        for j, (share, color) in enumerate(((r, _REF), (c, _CUR))):
            items.append(f"<rect x='{label_w}' y='{y + 2 + j * 9}' width='{span * share / top:.1f}' height='8' "
                         f"fill='{color}'><title>{_e(name)}: {'current' if j else 'reference'} {share:.1%}"
                         "</title></rect>")
        items.append(f"<text x='{label_w + span + 6}' y='{y + 14}' font-size='11' fill='#555'>"
                     f"{r:.0%} / {c:.0%}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>"
            + "".join(items) + "</svg>")
