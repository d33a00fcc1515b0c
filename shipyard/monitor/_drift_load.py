"""Tables for drift: feature inputs read from JSONL or CSV files, or from stored traces, as columns.

JSONL is one JSON object per line (blank lines skipped); nested objects are flattened with dots
(``{"user": {"tier": 2}}`` is the field ``user.tier``); lists stay values. A line of an evaluation
dataset (``{"id": ..., "input": {...}, "expected": ...}``, shipyard/eval/cases.py) stands for its input,
so an eval dataset can be the reference as it is. A chat row (``{"messages": [...], "answer": ...}``,
or a case whose input is a list of messages) becomes ``{"prompt": <the last user message>, "answer":
...}``, the same two fields that stored chat traces give.

CSV (or TSV) has a header row; an empty cell is a missing value, and a column whose every non-empty cell
reads as a number holds numbers. Every problem is a ``DatasetError`` naming ``file:line``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..eval.cases import DatasetError, json_type, read_objects
from ..eval.cases import read_lines as _lines
from ._drift_columns import label

__all__ = ["OUTCOMES", "Table", "chat_row", "load_table", "table_from_rows", "table_from_traces"]

_CASE_KEYS = frozenset(("id", "input", "expected", "segment", "severity", "meta"))
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


@dataclass
class Table:
    """Rows of feature inputs held as columns: ``columns[field][i]`` is row i's value (None: absent)."""

    columns: dict[str, list[Any]]
    rows: int
    source: str = ""

    def where(self, segment: Mapping[str, str]) -> Table:
        """The rows whose fields have these values (compared as text: tier=2 matches 2 and "2")."""
        keep: set[int] | None = None
        for name, wanted in segment.items():
            rows = set(self.groups(name).get(wanted, ()))
            keep = rows if keep is None else keep & rows
        return self.take(sorted(keep) if keep is not None else list(range(self.rows)))

    def groups(self, name: str) -> dict[str, list[int]]:
        """Row indices by the value of a field (as text); rows without the field are left out."""
        out: dict[str, list[int]] = {}
        for i, value in enumerate(self.columns.get(name, ())):
            if value is not None:
                out.setdefault(label(value), []).append(i)
        return out

    def take(self, rows: list[int]) -> Table:
        """These rows, in this order (numpy columns stay arrays)."""
        index = np.asarray(rows, dtype=np.intp)
        return Table({k: v[index] if isinstance(v, np.ndarray) else [v[i] for i in rows]
                      for k, v in self.columns.items()}, len(rows), self.source)


class _Builder:
    """Columns grown row by row; a field first seen at row i gets None for the rows before it."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.rows = 0

    def add(self, flat: Mapping[str, Any]) -> None:
        n = self.rows
        for key, value in flat.items():
            column = self.columns.get(key)
            if column is None:
                column = self.columns[key] = [None] * n
            column.append(value)
        self.rows = n + 1
        if len(flat) != len(self.columns):
            for column in self.columns.values():
                if len(column) == n:
                    column.append(None)

    def table(self, source: str = "") -> Table:
        return Table(self.columns, self.rows, source)


def flatten(obj: Mapping[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested objects as dotted fields: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {} if out is None else out
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flatten(value, name + ".", out)
        else:
            out[name] = value
    return out


def chat_row(messages: Any, answer: Any = None) -> dict[str, Any]:
    """A chat call as drift fields: the text of the last user message, and the answer."""
    prompt = None
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                prompt = _message_text(message.get("content"))
                break
    return {"prompt": prompt, "answer": answer}


def table_from_rows(rows: Iterable[Mapping[str, Any]], source: str = "") -> Table:
    builder = _Builder()
    for row in rows:
        builder.add(flatten(row))
    return builder.table(source)


OUTCOMES = ("outcome.refused", "outcome.fallback", "outcome.eval_score")
"""The columns every stored call gives, content or not: whether the model refused (a ``refusal`` event,
shipyard/monitor/refusal.py), whether the feature's fallback_response answered, and the call's online
evaluation score (None when it was not sampled)."""


def table_from_traces(traces: Iterable[Mapping[str, Any]], *,
                      inputs_only: bool = False) -> tuple[Table, dict[str, int]]:
    """Stored traces (``Store.traffic``) as a table, and how many calls gave no inputs, by reason:
    no_content, sealed (encrypted content that was not opened), no_input.

    Each call gives its inputs (from the stored content), what it answered (``output.<field>`` for a
    typed feature, ``answer`` for chat), its segment (the trace's ``segment``: ``lang=es,tier=gold`` gives
    the fields ``lang`` and ``tier`` where the inputs do not have them) and the ``OUTCOMES``. A call
    without inputs is still a row (its outcomes count, its input fields are absent) unless ``inputs_only``:
    against a file of inputs, such rows would read as missing values."""
    builder = _Builder()
    skipped: dict[str, int] = {}
    for trace in traces:
        content = trace.get("content")
        if isinstance(content, str):
            try:
                content = json.loads(content)
            except ValueError:
                pass
        row: dict[str, Any] = {}
        reason = None
        if content is None:
            reason = "no_content"
        elif not isinstance(content, Mapping) or content.get("encrypted") is True:
            reason = "sealed"
        elif isinstance(content.get("input"), Mapping):
            flatten(content["input"], "", row)
        elif isinstance(content.get("messages"), list):
            row.update(chat_row(content["messages"], content.get("answer")))
        elif isinstance(content.get("input"), str):
            row["prompt"] = content["input"]
        else:
            reason = "no_input"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            if inputs_only:
                continue
        elif isinstance(content.get("output"), Mapping):
            flatten(content["output"], "output.", row)
        for pair in (trace.get("segment") or "").split(","):
            key, sep, value = pair.partition("=")
            if sep and key not in row:
                row[key] = value
        row.update(_outcomes(trace))
        builder.add(row)
    return builder.table("traces"), skipped


def _outcomes(trace: Mapping[str, Any]) -> dict[str, Any]:
    events = trace.get("events")
    if isinstance(events, str):
        try:
            events = json.loads(events)
        except ValueError:
            events = None
    refused = any(isinstance(e, Mapping) and e.get("kind") == "refusal" for e in events or ())
    score = trace.get("eval_score")
    return {"outcome.refused": refused, "outcome.fallback": trace.get("status") == "fallback",
            "outcome.eval_score": float(score) if isinstance(score, int | float) else None}


def load_table(path: str | os.PathLike[str]) -> Table:
    """A JSONL or CSV file of feature inputs as a table; ``DatasetError`` (file:line) when it cannot be read."""
    kind = _FORMATS.get(Path(path).suffix.lower())
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DatasetError(path, None, f"cannot read the file: {exc.strerror or exc}",
                           "check the path and its permissions") from None
    with f:
        if kind is None:
            kind = "jsonl" if f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"
            f.seek(0)
        builder = _Builder()
        if kind == "jsonl":
            _read_jsonl(path, f, builder)
        else:
            _read_csv(path, f, builder, "\t" if kind == "tsv" else ",")
    if builder.rows == 0:
        raise DatasetError(path, None, "the file has no rows",
                           "write one JSON object per line (JSONL), or a header and rows (CSV)")
    return builder.table(str(path))


def _read_jsonl(path: str | os.PathLike[str], f: BinaryIO, builder: _Builder) -> None:
    cases: bool | None = None  # an eval dataset? decided by the first row
    for n, obj in read_objects(path, f, noun="row", example='{"field": value, ...}'):
        if cases is None:
            cases = "input" in obj and set(obj) <= _CASE_KEYS
        if cases:
            builder.add(_case_row(path, n, obj))
        elif isinstance(obj.get("messages"), list) and set(obj) <= {"messages", "answer"}:
            builder.add(chat_row(obj["messages"], obj.get("answer")))
        else:
            builder.add(flatten(obj))


def _case_row(path: str | os.PathLike[str], line: int, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A case as drift fields: its input, its expected output when that is an object (a typed feature's
    expected fields, the reference for output drift, as ``output.<field>``), and its segment."""
    data = obj.get("input")
    if isinstance(data, Mapping):
        row = flatten(data)
    elif isinstance(data, list):
        row = chat_row(data)
    elif isinstance(data, str):
        row = {"prompt": data}
    else:
        raise DatasetError(path, line, "this row of an eval dataset has no input" if data is None
                           else f"\"input\" is {json_type(data)}",
                           "give every case an input: an object of fields, chat messages, or a text")
    expected = obj.get("expected")
    if isinstance(expected, Mapping):
        flatten(expected, "output.", row)
    segment = obj.get("segment")
    for key, value in (segment.items() if isinstance(segment, Mapping) else ()):
        row.setdefault(str(key), value)
    return row


def _read_csv(path: str | os.PathLike[str], f: BinaryIO, builder: _Builder, delimiter: str) -> None:
    last = 0
    reader = csv.reader((text for _, text in _lines(path, f)), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    columns: list[list[Any]] = []
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                for i, name in enumerate(header):
                    if not name:
                        raise DatasetError(path, start, f"column {i + 1} of the header has no name",
                                           "name every column")
                    if name in header[:i]:
                        raise DatasetError(path, start, f"the column {name!r} appears twice", "keep one of them")
                columns = [[] for _ in header]
                continue
            if len(record) != len(header):
                raise DatasetError(path, start, f"{len(record)} cells where the header has {len(header)}",
                                   "quote cells that hold the delimiter or a line break")
            for column, cell in zip(columns, record, strict=True):
                column.append(cell if cell.strip() else None)
    except csv.Error as exc:
        raise DatasetError(path, last + 1, f"bad CSV: {exc}",
                           "quote cells with \"...\" and double the quotes inside them") from None
    if header is None:
        return
    builder.rows = len(columns[0]) if columns else 0
    builder.columns = {name: _numbers_if_all(values) for name, values in zip(header, columns, strict=True)}


def _numbers_if_all(cells: list[Any]) -> list[Any]:
    """A CSV column as numbers when every non-empty cell is one (ints stay ints), else as text."""
    out: list[Any] = []
    for cell in cells:
        if cell is None:
            out.append(None)
            continue
        text = cell.strip()
        try:
            out.append(int(text))
        except ValueError:
            try:
                out.append(float(text))
            except ValueError:
                return cells
    return out


def _message_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        return "\n".join(parts) if parts else None
    return None
