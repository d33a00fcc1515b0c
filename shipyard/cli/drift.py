"""``shipyard drift``: compare a feature's inputs against a reference, in the terminal, JSON and HTML."""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table as RichTable
from rich.text import Text

from ..config import default_config_path, load_config
from ..errors import ConfigError
from ..units import TRAFFIC, parse_window
from . import ConfigOption, _config_failure, _duration, _open, err, fail, out


def drift_command(
    feature: Annotated[str, typer.Argument(help="The feature whose inputs and outputs are compared")],
    reference: Annotated[str | None, typer.Option(
        "--reference", "-r", metavar="FILE|traffic:START..END",
        help="JSONL/CSV of inputs, an eval dataset, or a window of recorded traffic such as "
             "traffic:2026-11-01..2026-11-08 or traffic:14d..7d [default: the feature's drift.reference, "
             "else its eval.dataset]",
    )] = None,
    current: Annotated[Path | None, typer.Option(
        "--current", help="JSONL/CSV of inputs [default: the recorded traffic of the last --window]",
    )] = None,
    window: Annotated[str, typer.Option(
        "--window", "-w", help="How far back the traffic is read, e.g. 24h, 7d",
    )] = "24h",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many recent calls a side")] = 100_000,
    config: ConfigOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Write the HTML report here (one file, offline)",
    )] = None,
    fields: Annotated[str | None, typer.Option("--fields", help="Comma-separated fields [default: all]")] = None,
    segment: Annotated[list[str] | None, typer.Option(
        "--segment", "-s", help="FIELD=VALUE: only the rows (both sides) where FIELD is VALUE; repeatable",
    )] = None,
    by_segment: Annotated[list[str] | None, typer.Option(
        "--by-segment", "-b", metavar="FIELD",
        help="Also a report per value of FIELD; repeatable; 'none' for none [default: the feature's segments]",
    )] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--type", help="FIELD=numeric|categorical|text instead of the inferred type; repeatable",
    )] = None,
    share: Annotated[float, typer.Option(
        "--dataset-share", min=0.01, max=1.0, help="Share of drifted fields that makes the dataset drifted",
    )] = 0.5,
    embeddings: Annotated[bool, typer.Option(
        "--embeddings/--no-embeddings", help="Embedding drift of text fields (needs the semantic extra)",
    )] = True,
) -> None:
    """Compare a feature's inputs and outputs against a reference, field by field and per segment; exit 1
    if any field drifted (or a segment's dataset did), 2 when it cannot compare.

    Recorded traffic gives each call's inputs (with retention.store_content redacted; for chat features
    the last user message as "prompt" and the answer as "answer"), a typed feature's answer as
    output.FIELD, and outcome.refused, outcome.fallback and outcome.eval_score, which need no stored
    content."""
    from ..eval.cases import DatasetError
    from ..monitor import drift

    wanted_segment = _pairs("--segment", segment or [])
    wanted_types = _pairs("--type", types or [])
    now = time.time()
    since = now - _duration("--window", window)
    field_list = [f.strip() for f in fields.split(",") if f.strip()] if fields is not None else None
    if field_list == []:
        fail("--fields: name at least one field")
    try:
        options = drift.DriftOptions(dataset_share=share, embeddings=embeddings)
    except ValueError as exc:
        fail(str(exc))
    opened = functools.cache(lambda: _open(config))
    # The config gives the defaults (reference, segments) and the traffic; two files need none, but one
    # that is there (or named) still gives the feature's segments.
    files_only = reference is not None and not reference.startswith(TRAFFIC) and current is not None
    spec = None
    if not files_only or (by_segment is None and config is not None):
        cfg = _config(config)
        spec = _feature_spec(cfg, feature)
    elif by_segment is None and default_config_path(None).exists():  # only for the segments: best effort
        try:
            spec = load_config(default_config_path(None)).features.get(feature)
        except ConfigError:
            spec = None
        if spec is None:
            err.print(f"note: {default_config_path(None)} is not used (it does not load, or has no {feature!r}); "
                      "no per-segment reports unless --by-segment names the fields", highlight=False, markup=False)
    try:
        notes: list[str] = []
        ref_text = reference or _default_reference(cfg.base_dir, feature, spec)
        if ref_text.startswith(TRAFFIC):
            try:
                ref_since, ref_until = parse_window(ref_text[len(TRAFFIC):], now)
            except ValueError as exc:
                fail(f"--reference: {exc}")
            ref_table, ref_label, ref_notes = _traffic(opened, feature, ref_since, ref_until, limit,
                                                       f"reference window {ref_text[len(TRAFFIC):]}", False)
            notes += [f"reference: {n}" for n in ref_notes]
        else:
            ref_table, ref_label = drift.load_table(ref_text), ref_text
        if current is not None:
            cur_table = drift.load_table(current)
            current_label = str(current)
        else:
            cur_table, current_label, cur_notes = _traffic(opened, feature, since, None, limit, f"last {window}",
                                                           not ref_text.startswith(TRAFFIC))
            notes += cur_notes
    except DatasetError as exc:
        fail(exc.message)
    if wanted_segment:
        ref_table, cur_table = ref_table.where(wanted_segment), cur_table.where(wanted_segment)
        shown = ", ".join(f"{k}={v}" for k, v in wanted_segment.items())
        for side, table in (("reference", ref_table), ("current", cur_table)):
            if table.rows == 0:
                fail(f"no rows of the {side} in segment {shown}")
        current_label += f" [{shown}]"
    keys = [k for k in (by_segment if by_segment is not None else (spec.segments if spec else []))
            if k.lower() != "none" and k not in wanted_segment]
    try:
        report = drift.compare(ref_table, cur_table, options=options, types=wanted_types, fields=field_list)
        if keys:
            report.segments, segment_notes = drift.compare_segments(
                ref_table, cur_table, keys, options=options, types=wanted_types, fields=field_list)
            notes += segment_notes
    except ValueError as exc:
        fail(str(exc))
    report.notes[:0] = notes
    _print(report)
    _write(report, feature, ref_label, current_label, json_out, html_out)
    raise typer.Exit(1 if report.something_drifted else 0)


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{option}: write FIELD=VALUE (got {item!r})")
        pairs[key.strip()] = value.strip()
    return pairs


def _default_reference(base_dir: Path, feature: str, spec: Any) -> str:
    if spec.drift is not None:
        ref = spec.drift.reference
        return ref if ref.startswith(TRAFFIC) else str(Path(base_dir) / ref)
    if spec.eval is None or not spec.eval.dataset:
        fail(f"no reference: pass --reference FILE or traffic:START..END, or set drift.reference or "
             f"eval.dataset for {feature}")
    return str(Path(base_dir) / spec.eval.dataset)


def _config(config: Path | None) -> Any:
    try:
        return load_config(default_config_path(config))
    except ConfigError as exc:
        _config_failure(exc)


def _feature_spec(cfg: Any, feature: str) -> Any:
    spec = cfg.features.get(feature)
    if spec is None:
        fail(f"unknown feature {feature!r}; the config has: {', '.join(sorted(cfg.features)) or 'none'}")
    return spec


def _traffic(opened: Callable[[], tuple[Any, Any]], feature: str, since: float, until: float | None, limit: int,
             what: str, inputs_only: bool) -> tuple[Any, str, list[str]]:
    """The feature's calls of a window, as a table (``inputs_only``: the calls with stored inputs); a data
    error (exit 2) when there are none."""
    from ..monitor.drift import table_from_traces

    cfg, store = opened()
    _feature_spec(cfg, feature)
    traces = store.traffic(feature=feature, since=since, until=until, limit=limit)
    if not traces:
        fail(f"no recorded calls of {feature!r} in the {what}; traces are kept "
             f"{cfg.model.retention_of(feature).traces_days} days (retention.traces_days), "
             "or pass a file instead")
    table, skipped = table_from_traces(traces, inputs_only=inputs_only)
    notes = []
    if skipped:
        left_out = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skipped.items()))
        notes.append(f"calls without their inputs ({'left out' if inputs_only else 'their outcomes count'}): "
                     f"{left_out}; inputs need retention.store_content: redacted")
    if len(traces) == limit:
        notes.append(f"read the newest {limit} calls of the {what} (--limit)")
    if table.rows == 0:
        fail(f"no stored inputs of {feature!r} in the {what} ({notes[0]}); compare the outcomes against a "
             "window of traffic (--reference traffic:START..END), or pass --current FILE")
    span = f"{_utc(since)}..{_utc(until) if until is not None else 'now'}"
    return table, f"traffic of the {what} ({span} UTC, {table.rows} calls)", notes


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def _print(report: Any) -> None:
    table = RichTable("field", "type", "test", "statistic", "threshold", "p-value", "n ref", "n cur", "drifted")
    for f in report.fields:
        any_missing = f.reference_missing or f.current_missing
        shown = [c for c in f.checks if c.aspect != "missing" or c.drifted or any_missing]
        if not shown:
            table.add_row(Text(f.field), f.type, Text("not compared", style="dim"), "", "", "", "", "", "-")
        for i, c in enumerate(shown):
            threshold = ("p < " if c.threshold_on == "p_value" else ">= ") + _num(c.threshold, 3)
            mark = (Text("yes", style="bold red") if c.drifted else Text("no", style="green")) if c.decisive \
                else Text("(info)", style="dim")
            table.add_row(
                Text(f.field) if i == 0 else "", f.type if i == 0 else "",
                Text(c.name, style="" if c.decisive else "dim"), _num(c.statistic), threshold, _num(c.p_value, 3),
                f"{c.reference_n:,}", f"{c.current_n:,}", mark,
            )
        table.add_section()
    out.print(table)
    for f in report.fields:
        for note in f.notes:
            out.print(Text(f"{f.field}: {note}", style="dim"))
    for note in report.notes:
        out.print(Text(f"note: {note}", style="dim"))
    if report.segments:
        seg = RichTable("segment", "n ref", "n cur", "drifted fields", "share", "dataset drift", title="By segment")
        for sd in report.segments:
            r = sd.report
            mark = Text("yes", style="bold red") if sd.drifted else Text("no", style="green")
            seg.add_row(Text(sd.name), f"{sd.reference_rows:,}", f"{sd.current_rows:,}",
                        Text(", ".join(r.drifted_fields) if r else sd.note, style="" if r else "dim"),
                        f"{r.drifted_share:.0%}" if r else "", mark if r else Text("-", style="dim"))
        out.print(seg)
    drifted, compared = report.drifted_fields, len(report.compared)
    plural = "s" if compared != 1 else ""
    line = Text(f"{len(drifted)} of {compared} field{plural} drifted ({report.drifted_share:.0%})")
    if drifted:
        line.append(": " + ", ".join(drifted), style="bold red")
    line.append(f"; dataset drift: {'yes' if report.drifted else 'no'} (threshold {report.dataset_share:.0%}); "
                f"{report.reference_rows:,} reference rows, {report.current_rows:,} current rows, "
                f"{report.seconds:.2f} s")
    if report.segments:
        judged = [sd for sd in report.segments if sd.report is not None]
        line.append(f"; segments drifted: {len(report.drifted_segments)} of {len(judged)}")
        if report.drifted_segments:
            line.append(" (" + ", ".join(report.drifted_segments) + ")", style="bold red")
    out.print(line)


def _write(report: Any, feature: str, reference: str, current: str, json_out: Path | None,
           html_out: Path | None) -> None:
    from ..monitor.drift import to_html

    try:
        if json_out is not None:
            data = {"feature": feature, "reference": reference, "current": current, **report.to_dict()}
            json_out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            err.print(f"JSON report: {json_out}", highlight=False, markup=False)
        if html_out is not None:
            html_out.write_text(to_html(report, title=f"Drift: {feature}", reference=reference, current=current),
                                encoding="utf-8")
            err.print(f"HTML report: {html_out}", highlight=False, markup=False)
    except OSError as exc:
        fail(f"cannot write the report: {exc}")
