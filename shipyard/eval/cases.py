"""Evaluation datasets: the cases a feature is run on, read from JSONL or CSV and written as JSONL.

JSONL is one JSON object per line (blank lines are skipped)::

    {"id": "refund-1", "input": {"text": "refund please"}, "expected": {"category": "billing"},
     "segment": {"lang": "en", "tier": 2}, "severity": "critical", "meta": {"ticket": "T-12"}}

``input`` is required: a feature's input object, a list of chat messages, or a text (one user message).
``id`` defaults to ``line-N``; ``segment`` values (strings or numbers) are kept as strings; ``severity``
is critical, major or minor; any other key is refused (put free fields under ``meta``), so that a typo in
``expected`` does not quietly turn a case into one without a reference.

CSV (or TSV) has a header row with an ``input`` column and, optionally, ``expected``, ``id`` and
``severity``; every ``segment.X`` or ``seg_X`` column is segment key X and every ``meta.X`` column meta key X.
A cell of ``input`` or ``expected`` that starts with ``{``, ``[`` or ``"`` is JSON; any other is text.
Empty cells are absent values.

Files are read line by line, so a dataset of any size streams through ``iter_cases``; only the ids seen
are kept (to refuse a duplicate). Every problem is a ``DatasetError`` that names ``file:line``, what is
wrong and how to fix it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ShipyardError

__all__ = [
    "SEVERITIES",
    "Case",
    "DatasetError",
    "TraceCases",
    "cases_from_traces",
    "iter_cases",
    "load_cases",
    "write_cases",
]

SEVERITIES = ("critical", "major", "minor")
MAX_ID_CHARS = 200  # what the store keeps of a case id (eval_results.case_id)
_JSONL_KEYS = ("id", "input", "expected", "segment", "severity", "meta")
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}


class DatasetError(ShipyardError):
    """A dataset that cannot be read. The message is ``file:line: what is wrong; how to fix it``."""

    code = "dataset_error"

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}" + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class Case:
    """One example a feature is run on. ``expected`` is the reference answer (None: the case has none,
    and only reference-free checks can judge it); ``severity`` says how much a failure of this case weighs."""

    id: str
    input: Any
    expected: Any | None = None
    segment: dict[str, str] = field(default_factory=dict)
    severity: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# -- reading --------------------------------------------------------------------------------------------


def load_cases(path: str | os.PathLike[str], *, format: str | None = None) -> list[Case]:
    """Every case of a JSONL, CSV or TSV file (by its extension, or ``format``)."""
    return list(iter_cases(path, format=format))


def iter_cases(path: str | os.PathLike[str], *, format: str | None = None) -> Iterator[Case]:
    """The cases of a dataset file, one at a time, read line by line."""
    kind = format or _FORMATS.get(Path(path).suffix.lower())
    if kind not in ("jsonl", "csv", "tsv"):
        raise DatasetError(path, None, f"unknown dataset format {Path(path).suffix or '(no extension)'!r}",
                           "name the file .jsonl, .csv or .tsv")
    count = 0
    for case in _read(path, kind):
        count += 1
        yield case
    if count == 0:
        empty = os.path.getsize(path) == 0
        fix = ("add one JSON object per line, each with an \"input\"" if kind == "jsonl"
               else "add a header row with an \"input\" column, and a row per case")
        raise DatasetError(path, None, "the file is empty" if empty else "the file has no cases", fix)


def _read(path: str | os.PathLike[str], kind: str) -> Iterator[Case]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, when the generator ends or is dropped
    except OSError as exc:
        raise DatasetError(path, None, f"cannot read the file: {exc.strerror or exc}",
                           "check the path and its permissions") from None
    seen: dict[str, int] = {}
    try:
        rows = _jsonl_rows(path, f) if kind == "jsonl" else _csv_rows(path, f, "\t" if kind == "tsv" else ",")
        for line, raw in rows:
            case = _case(path, line, raw)
            if case.id in seen:
                raise DatasetError(path, line, f"duplicate id {case.id!r} (first on line {seen[case.id]})",
                                   "give every case its own id")
            seen[case.id] = line
            yield case
    finally:
        f.close()


def read_lines(path: str | os.PathLike[str], f: BinaryIO) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded as UTF-8 one line at a time (a leading BOM is dropped)."""
    for n, raw in enumerate(f, 1):
        try:
            text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                path, n, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                "save the file as UTF-8 (a spreadsheet's \"CSV UTF-8\"; iconv -f <encoding> -t utf-8)",
            ) from None
        yield n, text


def read_objects(
    path: str | os.PathLike[str], f: BinaryIO, *, noun: str = "case", example: str = '{"input": ...}'
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSON Lines file; a line that is not one JSON
    object is a DatasetError naming it (``noun``, ``example``: how the message speaks of a line)."""
    for n, text in read_lines(path, f):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(path, n, f"bad JSON: {exc.msg} at column {exc.colno}",
                               f"write each {noun} as one JSON object on one line") from None
        if not isinstance(obj, dict):
            raise DatasetError(path, n, f"a {noun} must be a JSON object, not {json_type(obj)}",
                               f"write {example} on each line")
        yield n, obj


def _jsonl_rows(path: str | os.PathLike[str], f: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, obj in read_objects(path, f):
        unknown = [k for k in obj if k not in _JSONL_KEYS]
        if unknown:
            raise DatasetError(path, n, f"unknown key {unknown[0]!r}",
                               f"a case has {', '.join(_JSONL_KEYS)}; put free fields under \"meta\"")
        yield n, obj


def _csv_rows(
    path: str | os.PathLike[str], f: BinaryIO, delimiter: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    last = 0  # the line the previous record ended on: a quoted cell may span lines
    reader = csv.reader((text for _, text in read_lines(path, f)), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    columns: list[tuple[str, str | None]] = []
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                columns = _csv_columns(path, start, header)
                continue
            if len(record) != len(header):
                raise DatasetError(path, start, f"{len(record)} cells where the header has {len(header)}",
                                   "quote cells that hold the delimiter or a line break")
            yield start, _csv_case(path, start, columns, record)
    except csv.Error as exc:
        raise DatasetError(path, last + 1, f"bad CSV: {exc}", "quote cells with \"...\" and double the quotes "
                           "inside them") from None


def _csv_columns(path: str | os.PathLike[str], line: int, header: list[str]) -> list[tuple[str, str | None]]:
    """(kind, key) per column: kind is input/expected/id/severity/segment/meta."""
    columns: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DatasetError(path, line, f"the column {name!r} appears twice", "keep one of them")
        seen.add(name)
        low = name.lower()
        if low in ("input", "expected", "id", "severity"):
            columns.append((low, None))
        elif low.startswith("segment.") and len(name) > 8:
            columns.append(("segment", name[8:]))
        elif low.startswith("seg_") and len(name) > 4:
            columns.append(("segment", name[4:]))
        elif low.startswith("meta.") and len(name) > 5:
            columns.append(("meta", name[5:]))
        else:
            raise DatasetError(path, line, f"unknown column {name!r}",
                               "the columns are input, expected, id, severity, segment.X (or seg_X) and meta.X")
    if ("input", None) not in columns:
        raise DatasetError(path, line, f"no \"input\" column (the header has {', '.join(header) or 'nothing'})",
                           "name the column that holds each case's input \"input\"")
    return columns


def _csv_case(
    path: str | os.PathLike[str], line: int, columns: list[tuple[str, str | None]], record: list[str]
) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for (kind, key), cell in zip(columns, record, strict=True):
        if not cell.strip():
            continue
        if kind in ("input", "expected"):
            obj[kind] = _cell_value(path, line, kind, cell)
        elif key is None:
            obj[kind] = cell.strip()
        else:
            obj.setdefault(kind, {})[key] = cell.strip()
    return obj


def _cell_value(path: str | os.PathLike[str], line: int, column: str, cell: str) -> Any:
    text = cell.strip()
    if not text.startswith(("{", "[", '"')):
        return cell
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, line, f"bad JSON in the {column!r} cell: {exc.msg} at column {exc.colno}",
                           "fix the JSON, or start the cell with another character to make it text") from None


def _case(path: str | os.PathLike[str], line: int | None, obj: Mapping[str, Any]) -> Case:
    """A Case from one record, checked; ``line`` names it in errors."""
    if obj.get("input") is None:
        raise DatasetError(path, line, "no \"input\"" if "input" not in obj else "\"input\" is null",
                           "give every case an input: the feature's input object, chat messages, or a text")
    data = obj["input"]
    if isinstance(data, list):
        if not data:
            raise DatasetError(path, line, "\"input\" is an empty list of messages",
                               "give at least one {\"role\": ..., \"content\": ...} message")
        for i, m in enumerate(data):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str)):
                raise DatasetError(path, line, f"input[{i}] is not a chat message",
                                   "a message is an object with a \"role\" and a \"content\"")
    raw_id = obj.get("id")
    if raw_id is None:
        case_id = f"line-{line}"
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id).strip():
        case_id = str(raw_id).strip()
    else:
        raise DatasetError(path, line,
                           f"\"id\" must be a non-empty string or an integer, not {json_type(raw_id)}",
                           "give the case a name such as \"refund-1\", or leave the id out")
    if len(case_id) > MAX_ID_CHARS:
        raise DatasetError(path, line, f"the id is {len(case_id)} characters long (at most {MAX_ID_CHARS})",
                           "give the case a shorter name, or leave the id out")
    severity = obj.get("severity")
    if severity is not None:
        if not isinstance(severity, str) or severity.strip().lower() not in SEVERITIES:
            raise DatasetError(path, line, f"unknown severity {severity!r}",
                               f"use one of {', '.join(SEVERITIES)}, or leave it out")
        severity = severity.strip().lower()
    return Case(
        id=case_id,
        input=data,
        expected=obj.get("expected"),
        segment=_segment(path, line, obj.get("segment")),
        severity=severity,
        meta=_meta(path, line, obj.get("meta")),
    )


def _segment(path: str | os.PathLike[str], line: int | None, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DatasetError(path, line, f"\"segment\" must be an object, not {json_type(raw)}",
                           'write it as {"lang": "en", "tier": 2}')
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not key:
            raise DatasetError(path, line, "a segment key is empty", "name every segment key")
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            raise DatasetError(path, line, f"segment {key!r} is {json_type(value)}",
                               "segment values are strings or numbers")
    return out


def _meta(path: str | os.PathLike[str], line: int | None, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DatasetError(path, line, f"\"meta\" must be an object, not {json_type(raw)}",
                           'write it as {"note": "..."}')
    return dict(raw)


def json_type(value: Any) -> str:
    """How an error message names a JSON value's type (\"a number\", \"a list\")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


# -- writing --------------------------------------------------------------------------------------------


def write_cases(path: str | os.PathLike[str], cases: Iterable[Case], append: bool = True) -> int:
    """Write ``cases`` as JSONL, after what the file holds (``append``) or in its place; returns how many
    were written. Appending skips a case whose id the file already has (adding the same traces twice
    adds them once), and refuses to add to a file that does not load."""
    target = Path(path)
    existing = target.exists() and target.stat().st_size > 0
    taken: set[str] = {c.id for c in _read(target, "jsonl")} if append and existing else set()
    lines: list[bytes] = []
    for case in cases:
        if case.id in taken:
            continue
        record = _record(case)
        try:
            _case(path, None, record)  # never write what load_cases would refuse
        except DatasetError as exc:
            raise DatasetError(path, None, f"case {case.id!r}: {exc.problem}", exc.fix) from None
        taken.add(case.id)
        try:
            text = json.dumps(record, ensure_ascii=False, separators=(", ", ": "))
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escaped, the line stays valid UTF-8
            encoded = json.dumps(record, separators=(", ", ": ")).encode("ascii")
        except (TypeError, ValueError) as exc:
            raise DatasetError(path, None, f"case {case.id!r} is not JSON: {exc}",
                               "give cases JSON values only (dicts, lists, strings, numbers)") from None
        lines.append(encoded + b"\n")
    if append and existing:
        with open(target, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            lead = b"" if f.read(1) == b"\n" else b"\n"
            f.write(lead + b"".join(lines))
    else:
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.write_bytes(b"".join(lines))
            os.replace(tmp, target)
        except OSError as exc:
            raise DatasetError(path, None, f"cannot write the file: {exc.strerror or exc}",
                               "check that its folder exists and is writable") from None
    return len(lines)


def _record(case: Case) -> dict[str, Any]:
    record: dict[str, Any] = {"id": case.id, "input": case.input}
    if case.expected is not None:
        record["expected"] = case.expected
    if case.segment:
        record["segment"] = case.segment
    if case.severity is not None:
        record["severity"] = case.severity
    if case.meta:
        record["meta"] = case.meta
    return record


# -- from production traffic ----------------------------------------------------------------------------


class TraceCases(list[Case]):
    """The cases made from traces; ``skipped`` counts the traces that gave none, by reason:
    ``no_content`` (the feature keeps no prompts), ``sealed`` (still encrypted), ``no_input``,
    ``duplicate`` (a trace id seen before)."""

    def __init__(self, cases: Iterable[Case] = (), skipped: dict[str, int] | None = None) -> None:
        super().__init__(cases)
        self.skipped: dict[str, int] = dict(skipped or {})

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def cases_from_traces(traces: Iterable[Mapping[str, Any]], *, with_expected: bool = False) -> TraceCases:
    """Cases from stored traces (their content already redacted by the store): id ``trace-<trace_id>``,
    the call's input or chat messages, segment ``{"source": "traffic"}``, the trace's feature, op, status,
    tenant and time in ``meta``. ``expected`` is the recorded output or answer only with ``with_expected``:
    a production answer is not a reference until a person has read it."""
    out = TraceCases()
    seen: set[str] = set()

    def skip(reason: str) -> None:
        out.skipped[reason] = out.skipped.get(reason, 0) + 1

    for trace in traces:
        content = trace.get("content")
        if content is None:
            skip("no_content")
            continue
        if isinstance(content, str) and not content.startswith("aesgcm:"):
            try:  # a store that hands the content over as its JSON text
                content = json.loads(content)
            except ValueError:
                pass
        if not isinstance(content, dict):
            skip("sealed")
            continue
        data = content["input"] if content.get("input") is not None else content.get("messages")
        if data is None or data == []:
            skip("no_input")
            continue
        case_id = f"trace-{trace.get('trace_id')}"
        if case_id in seen:
            skip("duplicate")
            continue
        seen.add(case_id)
        expected = None
        if with_expected:
            expected = content["output"] if content.get("output") is not None else content.get("answer")
        meta = {k: trace[k] for k in ("trace_id", "feature", "op", "status", "tenant", "started_at")
                if trace.get(k) is not None}
        out.append(Case(id=case_id, input=data, expected=expected, segment={"source": "traffic"}, meta=meta))
    return out
