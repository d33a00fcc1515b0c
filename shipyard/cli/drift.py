"""``shipyard drift``: compare a feature's inputs against a reference, in the terminal, JSON and HTML."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table as RichTable
from rich.text import Text

from ..config import default_config_path, load_config
from ..errors import ConfigError
from . import ConfigOption, _config_failure, _duration, _open, err, fail, out


def drift_command(
    feature: Annotated[str, typer.Argument(help="The feature whose inputs are compared")],
    reference: Annotated[Path | None, typer.Option(
        "--reference", "-r", help="JSONL/CSV of inputs, or an eval dataset [default: the feature's eval.dataset]",
    )] = None,
    current: Annotated[Path | None, typer.Option(
        "--current", help="JSONL/CSV of inputs [default: the recorded traffic of the last --window]",
    )] = None,
    window: Annotated[str, typer.Option(
        "--window", "-w", help="How far back the traffic is read, e.g. 24h, 7d",
    )] = "24h",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many recent calls")] = 100_000,
    config: ConfigOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Write the HTML report here (one file, offline)",
    )] = None,
    fields: Annotated[str | None, typer.Option("--fields", help="Comma-separated fields [default: all]")] = None,
    segment: Annotated[list[str] | None, typer.Option(
        "--segment", "-s", help="FIELD=VALUE: only the rows (both sides) where FIELD is VALUE; repeatable",
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
    """Compare a feature's inputs against a reference, field by field; exit 1 if any field drifted.

    The current inputs come from --current, or else from the traces stored in the last --window (the
    calls' inputs; for chat features the last user message as "prompt" and the answer as "answer")."""
    from ..eval.cases import DatasetError
    from ..monitor import drift

    wanted_segment = _pairs("--segment", segment or [])
    wanted_types = _pairs("--type", types or [])
    since = time.time() - _duration("--window", window)
    field_list = [f.strip() for f in fields.split(",") if f.strip()] if fields is not None else None
    if field_list == []:
        fail("--fields: name at least one field")
    try:
        options = drift.DriftOptions(dataset_share=share, embeddings=embeddings)
    except ValueError as exc:
        fail(str(exc))
    try:
        ref_path = reference or _default_reference(config, feature)
        ref_table = drift.load_table(ref_path)
        notes: list[str] = []
        if current is not None:
            cur_table = drift.load_table(current)
            current_label = str(current)
        else:
            cur_table, current_label, notes = _traffic(config, feature, since, window, limit)
    except DatasetError as exc:
        fail(exc.message)
    if wanted_segment:
        ref_table, cur_table = ref_table.where(wanted_segment), cur_table.where(wanted_segment)
        shown = ", ".join(f"{k}={v}" for k, v in wanted_segment.items())
        for side, table in (("reference", ref_table), ("current", cur_table)):
            if table.rows == 0:
                fail(f"no rows of the {side} in segment {shown}")
        current_label += f" [{shown}]"
    try:
        report = drift.compare(ref_table, cur_table, options=options, types=wanted_types, fields=field_list)
    except ValueError as exc:
        fail(str(exc))
    report.notes[:0] = notes
    _print(report)
    _write(report, feature, str(ref_path), current_label, json_out, html_out)
    raise typer.Exit(1 if report.any_drifted else 0)


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{option}: write FIELD=VALUE (got {item!r})")
        pairs[key.strip()] = value.strip()
    return pairs


def _default_reference(config: Path | None, feature: str) -> Path:
    cfg = _config(config)
    spec = _feature_spec(cfg, feature)
    if spec.eval is None or not spec.eval.dataset:
        fail(f"no reference: pass --reference FILE, or set eval.dataset for {feature}")
    return Path(cfg.base_dir) / spec.eval.dataset


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


def _traffic(config: Path | None, feature: str, since: float, window: str, limit: int) -> tuple[Any, str, list[str]]:
    """The inputs of the feature's recent calls, as a table; a data error (exit 2) when there are none."""
    from ..monitor.drift import table_from_traces

    cfg, store = _open(config)
    _feature_spec(cfg, feature)
    traces = store.traces_with_content(feature=feature, since=since, status=None, limit=limit)
    table, skipped = table_from_traces(traces)
    notes = []
    if skipped:
        left_out = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(skipped.items()))
        notes.append(f"calls left out: {left_out}")
    if len(traces) == limit:
        notes.append(f"read the newest {limit} calls of the window (--limit)")
    if table.rows == 0:
        fail(f"no stored inputs of {feature!r} in the last {window}"
             + (f" ({notes[0]})" if notes else "")
             + "; the feature must store content (retention.store_content redacted or encrypted), "
             "or pass --current FILE")
    return table, f"traffic of the last {window} ({len(traces)} calls)", notes


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
    drifted, compared = report.drifted_fields, len(report.compared)
    plural = "s" if compared != 1 else ""
    line = Text(f"{len(drifted)} of {compared} field{plural} drifted ({report.drifted_share:.0%})")
    if drifted:
        line.append(": " + ", ".join(drifted), style="bold red")
    line.append(f"; dataset drift: {'yes' if report.drifted else 'no'} (threshold {report.dataset_share:.0%}); "
                f"{report.reference_rows:,} reference rows, {report.current_rows:,} current rows, "
                f"{report.seconds:.2f} s")
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
