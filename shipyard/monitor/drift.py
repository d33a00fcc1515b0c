"""Drift: has what a feature receives moved away from a reference?

``compare(reference, current)`` checks each field of two tables (row dicts, column arrays, or a ``Table``
read by ``load_table`` from JSONL/CSV or by ``table_from_traces`` from stored traffic) and returns a
``DriftReport``: per field, every check with its test, statistic, threshold, p-value where the test has
one, sample sizes and ``drifted``; overall, the share of drifted fields and whether the dataset drifted.

How a field's type is read (``types=`` overrides it): numbers are ``numeric``, except numbers with at
most 5 distinct values, which are ``categorical``, as are booleans and short strings; strings of three
words or more on average (or mostly distinct strings with spaces) are ``text``.

Which test decides, by type and sample size (n: the smaller side's count of values that are present).
These are Evidently's defaults, with one change: Evidently switches on the reference's size alone, but a
current window of 50 calls against a reference of a million rows would then be judged by a distance
whose sampling noise at 50 values is itself above the 0.1 threshold; the smaller side decides here.

- numeric: n <= 1000 (``small_sample``): two-sample Kolmogorov-Smirnov, drifted when p < 0.05;
  n > 1000: Wasserstein distance divided by the reference's standard deviation, drifted at >= 0.1.
- categorical: n <= 1000: chi-square test of homogeneity on the 2 x K counts (two categories: the
  two-proportion z-test), p < 0.05; n > 1000: Jensen-Shannon distance (natural log), drifted at >= 0.1.
- text: the length in characters, by the numeric rule; the vocabulary, as the Jensen-Shannon distance
  between the word frequencies (the 200 most frequent words of both sides, the rest as one "other"),
  with a permutation p-value (documents dealt at random) when n <= 1000 and the 0.1 threshold above;
  the out-of-vocabulary rate (current words the reference never used), drifted when above the
  reference's own held-out rate + 0.1; and the optional embedding drift below. With several deciding
  checks, a text field drifts by chance more often than 5% on small samples: 9.7% of 300 comparisons
  of two samples of 300 texts from one distribution (no embeddings; each check alone stays near 5%).

Also on every field:

- **missing values** (None, NaN, ±inf, blank strings): drifted when the missing rate moved by 0.05 or
  more *and* a two-proportion z-test gives p < 0.05 (the test alone flags 0.1% vs 0.2% on a million
  rows; the difference alone flags noise on fifty);
- **PSI** over the reference's deciles (categories for categorical fields; lengths for text), epsilon
  1e-4 for empty bins, reported with the conventional 0.2 threshold but *not* deciding: its sampling
  noise is about (bins - 1)(1/n + 1/m), 0.18 at 100 values a side, so on small samples it raises false
  alarms, and on large ones the Wasserstein rule is the more sensitive already.

A field drifted when any deciding check did; the dataset drifted when at least ``dataset_share`` (0.5)
of the compared fields did.

Embedding drift: texts (up to 1000 a side, at most 2000) are embedded with the local sentence model
(shipyard.economics.semantic, the ``semantic`` extra) and compared by maximum mean discrepancy with an
RBF kernel (median-heuristic bandwidth) and a permutation p-value. MMD rather than a domain classifier:
no classifier to train, no train/test split of small samples, and a permutation p-value that holds at
any sample size. When the model cannot load, the check is skipped with a note. The vocabulary and
out-of-vocabulary checks read up to 5000 texts a side, chosen at random (seeded: the same inputs give
the same report).

Speed: each numeric column is sorted once and every statistic reads the sorted arrays (the Wasserstein
distance in closed form, PSI bins by ``searchsorted``); categories are tallied in one hashing pass;
fields run on a thread per core (numpy's sorts release the GIL). bench/drift.py measures 1M rows x 20
columns given as column arrays; row dicts cost a pass of Python per value on top.
"""

from __future__ import annotations

import math
import os
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _drift_stats as st
from . import _drift_text as _text
from ._drift_columns import TYPES, Column, infer_type
from ._drift_load import Table, chat_row, load_table, table_from_rows, table_from_traces

__all__ = [
    "TYPES",
    "Check",
    "DriftOptions",
    "DriftReport",
    "FieldDrift",
    "SegmentDrift",
    "Table",
    "chat_row",
    "compare",
    "compare_segments",
    "load_table",
    "table_from_rows",
    "table_from_traces",
    "to_html",
]

_HISTOGRAM_BINS = 20
_HISTOGRAM_CATEGORIES = 12
_MAX_EMBEDDING_SAMPLE = 2000  # the kernel matrix is (2 x sample)^2 floats: 64 MB at 2000


@dataclass(frozen=True)
class DriftOptions:
    """Thresholds and sizes; the defaults are the rules in the module docstring."""

    small_sample: int = 1000
    """At most this many values on the smaller side: p-value tests (KS, chi-square); above: distances."""
    p_value: float = 0.05
    wasserstein: float = 0.1
    """Wasserstein distance in reference standard deviations."""
    jensen_shannon: float = 0.1
    psi: float = 0.2
    psi_bins: int = 10
    psi_epsilon: float = 1e-4
    missing_rate: float = 0.05
    """Smallest change of the missing-value rate (absolute) that counts."""
    categorical_max_unique: int = 5
    """Numbers with at most this many distinct values are categories."""
    top_k: int = 200
    """Words compared by the vocabulary check (the most frequent of both sides together)."""
    oov_margin: float = 0.1
    text_sample: int = 5000
    embeddings: bool = True
    embedding_sample: int = 1000
    permutations: int = 200
    dataset_share: float = 0.5
    seed: int = 0
    workers: int | None = None
    """Fields compared at once [default: one per CPU core]."""
    embedder: Any = None
    """Anything with ``encode(texts) -> array`` [default: the shared local sentence model]."""

    def __post_init__(self) -> None:
        for name in ("p_value", "dataset_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("wasserstein", "jensen_shannon", "psi", "psi_epsilon", "missing_rate", "oov_margin"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.psi_bins < 2 or self.top_k < 1 or self.text_sample < 2 or self.permutations < 0:
            raise ValueError("psi_bins >= 2, top_k >= 1, text_sample >= 2 and permutations >= 0 are needed")
        if not 5 <= self.embedding_sample <= _MAX_EMBEDDING_SAMPLE:
            raise ValueError(f"embedding_sample must be in [5, {_MAX_EMBEDDING_SAMPLE}], got {self.embedding_sample}")

    def rules(self) -> dict[str, Any]:
        """The thresholds a report was made with (written into its JSON)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("embedder", "workers")}


@dataclass(frozen=True)
class Check:
    """One test on one aspect of a field. ``threshold_on`` says how ``threshold`` reads: "p_value" (drifted
    when p_value < threshold) or "statistic" (drifted when statistic >= threshold). A check that is not
    ``decisive`` (PSI) is reported but does not make the field drifted."""

    aspect: str  # distribution, length, vocabulary, oov, embedding, missing
    test: str  # ks, wasserstein, chi_square, z, jensen_shannon, psi, two_proportion, oov_rate, mmd
    statistic: float
    threshold: float
    threshold_on: str
    p_value: float | None
    reference_n: int
    current_n: int
    drifted: bool
    decisive: bool = True
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.aspect == "distribution" or self.test.startswith(self.aspect):
            return self.test
        return f"{self.aspect}: {self.test}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "aspect": self.aspect, "test": self.test, "statistic": _num(self.statistic),
            "threshold": _num(self.threshold), "threshold_on": self.threshold_on, "p_value": _num(self.p_value),
            "reference_n": self.reference_n, "current_n": self.current_n, "drifted": self.drifted,
            "decisive": self.decisive, **({"detail": _plain(self.detail)} if self.detail else {}),
        }


@dataclass
class FieldDrift:
    """A field's checks. ``test``, ``statistic``, ``threshold``, ``p_value``, ``reference_n`` and
    ``current_n`` are those of its headline check: the first deciding check that drifted, else the first
    deciding check (the distribution's, or the text length's)."""

    field: str
    type: str
    type_source: str
    reference_rows: int
    current_rows: int
    reference_missing: int
    current_missing: int
    checks: list[Check] = field(default_factory=list)
    histogram: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return any(c.drifted for c in self.checks if c.decisive)

    @property
    def compared(self) -> bool:
        return any(c.decisive for c in self.checks)

    @property
    def headline(self) -> Check | None:
        deciding = [c for c in self.checks if c.decisive]
        return next((c for c in deciding if c.drifted), deciding[0] if deciding else None)

    def _head(self, name: str) -> Any:
        head = self.headline
        return getattr(head, name) if head is not None else None

    test = property(lambda self: self._head("name"))
    statistic = property(lambda self: self._head("statistic"))
    threshold = property(lambda self: self._head("threshold"))
    p_value = property(lambda self: self._head("p_value"))
    reference_n = property(lambda self: self._head("reference_n"))
    current_n = property(lambda self: self._head("current_n"))

    def to_dict(self) -> dict[str, Any]:
        head = self.headline
        return {
            "field": self.field, "type": self.type, "type_source": self.type_source,
            "test": head.name if head else None, "statistic": _num(head.statistic) if head else None,
            "threshold": _num(head.threshold) if head else None,
            "threshold_on": head.threshold_on if head else None,
            "p_value": _num(head.p_value) if head else None,
            "reference_n": head.reference_n if head else 0, "current_n": head.current_n if head else 0,
            "drifted": self.drifted,
            "missing": {"reference": self.reference_missing, "reference_rows": self.reference_rows,
                        "current": self.current_missing, "current_rows": self.current_rows},
            "checks": [c.to_dict() for c in self.checks], "notes": list(self.notes),
            "histogram": self.histogram,
        }


@dataclass
class DriftReport:
    fields: list[FieldDrift]
    reference_rows: int
    current_rows: int
    dataset_share: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    rules: dict[str, Any] = field(default_factory=dict)
    segments: list[SegmentDrift] = field(default_factory=list)
    """Per-segment reports (``compare_segments``), when asked for."""

    @property
    def compared(self) -> list[FieldDrift]:
        return [f for f in self.fields if f.compared]

    @property
    def drifted_fields(self) -> list[str]:
        return [f.field for f in self.fields if f.drifted]

    @property
    def drifted_share(self) -> float:
        compared = self.compared
        return sum(f.drifted for f in compared) / len(compared) if compared else 0.0

    @property
    def drifted(self) -> bool:
        """The dataset verdict: at least ``dataset_share`` of the compared fields drifted."""
        return bool(self.compared) and self.drifted_share >= self.dataset_share

    @property
    def any_drifted(self) -> bool:
        return bool(self.drifted_fields)

    @property
    def drifted_segments(self) -> list[str]:
        return [s.name for s in self.segments if s.drifted]

    @property
    def something_drifted(self) -> bool:
        """What the command's exit status says: a field of the whole, or a segment's dataset, drifted."""
        return self.any_drifted or bool(self.drifted_segments)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted, "any_drifted": self.any_drifted,
            "drifted_segments": self.drifted_segments, "segments": [s.to_dict() for s in self.segments],
            "drifted_share": round(self.drifted_share, 6), "dataset_share": self.dataset_share,
            "drifted_fields": self.drifted_fields, "fields_compared": len(self.compared),
            "reference_rows": self.reference_rows, "current_rows": self.current_rows,
            "seconds": round(self.seconds, 4), "notes": list(self.notes), "rules": self.rules,
            "fields": [f.to_dict() for f in self.fields],
        }


@dataclass
class SegmentDrift:
    """One segment's comparison: the rows of both sides where ``field`` is ``value``. A segment is judged
    by the dataset rule (at least ``dataset_share`` of its fields drifted), not by any one field: segments
    multiply the comparisons, and single p-value tests across many of them would cry wolf."""

    field: str
    value: str
    reference_rows: int
    current_rows: int
    report: DriftReport | None  # None: too few rows to judge
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.field}={self.value}"

    @property
    def drifted(self) -> bool:
        return self.report is not None and self.report.drifted

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"segment": {self.field: self.value}, "reference_rows": self.reference_rows,
                               "current_rows": self.current_rows, "drifted": self.drifted}
        if self.report is not None:
            out.update(drifted_share=round(self.report.drifted_share, 6),
                       drifted_fields=self.report.drifted_fields, fields_compared=len(self.report.compared),
                       fields=[f.to_dict() for f in self.report.fields])
        if self.note:
            out["note"] = self.note
        return out


ANSWER_FIELDS = ("answer", "output.", "outcome.")
"""Fields about the answer rather than the input: compared only when both sides have them (a file of
inputs has no outcomes, and that is not drift), where an input field missing on one side is."""

def comparable(reference: Iterable[str], current: Iterable[str]) -> list[str]:
    """The fields compared by default: every field of either side, except answer fields on one side only."""
    ref, cur = list(reference), list(current)
    both = set(ref) & set(cur)
    return [n for n in dict.fromkeys([*ref, *cur]) if n in both or not n.startswith(ANSWER_FIELDS)]


TableLike = Table | Mapping[str, Sequence[Any] | np.ndarray] | Sequence[Mapping[str, Any]]


def compare(reference: TableLike, current: TableLike, *, options: DriftOptions | None = None,
            types: Mapping[str, str] | None = None, fields: Sequence[str] | None = None) -> DriftReport:
    """Compare ``current`` against ``reference`` field by field.

    Each table is a ``Table``, a mapping of field -> column (a list or numpy array, all of one length),
    or a sequence of row dicts (nested dicts flattened with dots). ``types`` sets a field's type
    (numeric, categorical or text) instead of inferring it; ``fields`` limits the comparison to these.
    ValueError names an unknown field or type."""
    opts = options or DriftOptions()
    started = time.perf_counter()
    ref_columns, ref_rows = _columns(reference)
    cur_columns, cur_rows = _columns(current)
    names = comparable(ref_columns, cur_columns)
    if fields is not None:
        unknown = [f for f in fields if f not in ref_columns and f not in cur_columns]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; the tables have: {', '.join(names) or 'none'}")
        names = list(dict.fromkeys(fields))
    forced = dict(types or {})
    for name, kind in forced.items():
        if kind not in TYPES:
            raise ValueError(f"type of {name!r} must be one of {', '.join(TYPES)}, got {kind!r}")
        if name not in ref_columns and name not in cur_columns:
            raise ValueError(f"unknown field {name!r} in types; the tables have: {', '.join(names) or 'none'}")
    run = _Run(opts)
    jobs = [(n, ref_columns.get(n), ref_rows, cur_columns.get(n), cur_rows, forced.get(n)) for n in names]
    workers = min(opts.workers or os.cpu_count() or 1, len(jobs))
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="drift") as pool:
            results = list(pool.map(lambda job: run.field(*job), jobs))
    else:
        results = [run.field(*job) for job in jobs]
    notes = [f"embedding drift skipped: {run.embedding_error}"] if run.embedding_error else []
    return DriftReport(results, ref_rows, cur_rows, opts.dataset_share, time.perf_counter() - started,
                       notes, opts.rules())


SEGMENT_MIN_ROWS = 30
SEGMENT_MAX_VALUES = 10
SEGMENT_MAX_DISTINCT = 200
"""A field with more distinct values than this in the current rows (or mostly distinct values) is not a
segment: an amount, an id."""


def compare_segments(reference: TableLike, current: TableLike, keys: Sequence[str], *,
                     options: DriftOptions | None = None, types: Mapping[str, str] | None = None,
                     fields: Sequence[str] | None = None, min_rows: int = SEGMENT_MIN_ROWS,
                     max_values: int = SEGMENT_MAX_VALUES) -> tuple[list[SegmentDrift], list[str]]:
    """A report per value of each segment field (its ``max_values`` most frequent in the current rows),
    and notes on what could not be compared. A value with fewer than ``min_rows`` rows on either side is
    listed without a report. The segment field itself is left out of its segments' comparisons."""
    ref, cur = _table(reference), _table(current)
    out: list[SegmentDrift] = []
    notes: list[str] = []
    for key in dict.fromkeys(keys):
        if key not in ref.columns and key not in cur.columns:
            notes.append(f"segment {key!r}: neither side has this field")
            continue
        ref_groups, cur_groups = ref.groups(key), cur.groups(key)
        distinct = len(cur_groups)
        if distinct > SEGMENT_MAX_DISTINCT or (distinct > max_values and distinct > cur.rows / 2):
            notes.append(f"segment {key!r}: {len(cur_groups)} distinct values, not compared: a segment field is "
                         "a category (lang, tier, plan)")
            continue
        ranked = sorted(cur_groups, key=lambda v: (-len(cur_groups[v]), v))
        if len(ranked) > max_values:
            notes.append(f"segment {key!r}: the {max_values} most frequent of {len(ranked)} values compared")
        for value in ranked[:max_values]:
            n_ref, n_cur = len(ref_groups.get(value, ())), len(cur_groups[value])
            if min(n_ref, n_cur) < min_rows:
                out.append(SegmentDrift(key, value, n_ref, n_cur, None,
                                        f"too few rows to judge (needs {min_rows} a side)"))
                continue
            names = [f for f in (fields if fields is not None else comparable(ref.columns, cur.columns)) if f != key]
            report = compare(ref.take(ref_groups[value]), cur.take(cur_groups[value]), options=options,
                             types={k: v for k, v in (types or {}).items() if k != key} or None, fields=names)
            out.append(SegmentDrift(key, value, n_ref, n_cur, report))
    return out, notes


def _table(table: TableLike) -> Table:
    if isinstance(table, Table):
        return table
    columns, rows = _columns(table)
    return Table({k: v if isinstance(v, np.ndarray) else list(v) for k, v in columns.items()}, rows)


def to_html(report: DriftReport, *, title: str, reference: str, current: str) -> str:
    """The report as one offline HTML page with a histogram per field (reference against current)."""
    from ._drift_html import render

    return render(report, title=title, reference=reference, current=current)


def _columns(table: TableLike) -> tuple[Mapping[str, Any], int]:
    if isinstance(table, Table):
        return table.columns, table.rows
    if isinstance(table, Mapping):
        lengths: dict[int, str] = {}
        for name, column in table.items():
            if isinstance(column, str | bytes) or not hasattr(column, "__len__"):
                raise TypeError(f"column {name!r} is not a list or array (pass rows as a list of dicts)")
            lengths.setdefault(len(column), name)
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {', '.join(f'{n} has {k}' for k, n in lengths.items())}")
        return table, next(iter(lengths), 0)
    built = table_from_rows(table)
    return built.columns, built.rows


class _Run:
    """What the fields of one comparison share: the options and the embedding model (loaded once)."""

    def __init__(self, options: DriftOptions) -> None:
        self.options = options
        self.embedder = options.embedder
        self.embedding_error: str | None = None
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray | None:
        with self._lock:  # one model, one caller at a time; and a model that failed to load is not retried
            if self.embedding_error is not None:
                return None
            try:
                if self.embedder is None:
                    from ..economics.semantic import shared_embedder

                    self.embedder = shared_embedder()
                return np.asarray(self.embedder.encode(texts), dtype=np.float32)
            except (ImportError, OSError, RuntimeError, ValueError) as exc:
                self.embedding_error = str(exc) or type(exc).__name__
                return None

    def field(self, name: str, ref_values: Any, ref_rows: int, cur_values: Any, cur_rows: int,
              forced: str | None) -> FieldDrift:
        opts = self.options
        ref = Column.of(ref_values) if ref_values is not None else Column(ref_rows, ref_rows, np.empty(0), {})
        cur = Column.of(cur_values) if cur_values is not None else Column(cur_rows, cur_rows, np.empty(0), {})
        kind, why = (forced, "set") if forced else infer_type(ref, cur, opts.categorical_max_unique)
        out = FieldDrift(name, kind, why, ref.total, cur.total, ref.missing, cur.missing)
        for side, values in (("reference", ref_values), ("current", cur_values)):
            if values is None:
                out.notes.append(f"the {side} has no field {name!r}")
        rng = np.random.default_rng([opts.seed, zlib.crc32(name.encode())])
        if kind == "numeric":
            self._numeric(out, ref, cur)
        elif kind == "categorical":
            self._categorical(out, ref, cur)
        elif kind == "text":
            self._text(out, ref, cur, rng)
        if ref.total and cur.total and kind != "empty":
            out.checks.append(self._missing(ref, cur))
        out.checks.sort(key=lambda c: not c.decisive)  # stable: deciding checks first, informative last
        return out

    def _missing(self, ref: Column, cur: Column) -> Check:
        opts = self.options
        ref_rate, cur_rate = ref.missing / ref.total, cur.missing / cur.total
        _, p = st.two_proportion(ref.missing, ref.total, cur.missing, cur.total)
        change = cur_rate - ref_rate
        return Check("missing", "two_proportion", change, opts.missing_rate, "statistic", p, ref.total, cur.total,
                     abs(change) >= opts.missing_rate and p < opts.p_value,
                     detail={"reference_rate": ref_rate, "current_rate": cur_rate})

    def _numeric(self, out: FieldDrift, ref: Column, cur: Column) -> None:
        r, r_bad = ref.numeric()
        c, c_bad = cur.numeric()
        for side, bad in (("reference", r_bad), ("current", c_bad)):
            if bad:
                out.notes.append(f"{bad} value{'s' if bad != 1 else ''} in the {side} not a number: left out")
        if not _both(out, len(r), len(c), "numbers"):
            return
        out.checks.extend(self._numeric_checks("distribution", r, c))
        out.histogram = _bins(r, c)

    def _numeric_checks(self, aspect: str, r: np.ndarray, c: np.ndarray) -> list[Check]:
        opts = self.options
        n, m = len(r), len(c)
        if min(n, m) <= opts.small_sample:
            d, p = st.ks(r, c)
            main = Check(aspect, "ks", d, opts.p_value, "p_value", p, n, m, p < opts.p_value)
        else:
            distance = st.wasserstein(r, c)
            std = float(np.std(r))
            value = distance / std if std > 0 else distance  # a constant reference: the raw distance
            main = Check(aspect, "wasserstein", value, opts.wasserstein, "statistic", None, n, m,
                         value >= opts.wasserstein, detail={"distance": distance, "reference_std": std})
        index = st.psi(r, c, opts.psi_bins, opts.psi_epsilon)
        info = Check(aspect, "psi", index, opts.psi, "statistic", None, n, m, index >= opts.psi, decisive=False)
        return [main, info]

    def _categorical(self, out: FieldDrift, ref: Column, cur: Column) -> None:
        opts = self.options
        rc, cc = ref.categories(), cur.categories()
        if not _both(out, len(rc), len(cc), "values"):
            return
        labels = sorted(set(rc) | set(cc), key=lambda k: (-(rc.get(k, 0) + cc.get(k, 0)), k))
        r = np.array([rc.get(k, 0) for k in labels], dtype=np.float64)
        c = np.array([cc.get(k, 0) for k in labels], dtype=np.float64)
        n, m = int(r.sum()), int(c.sum())
        new = [k for k in labels if not rc.get(k)]
        detail: dict[str, Any] = {"categories": len(labels)}
        if new:
            detail["new_in_current"] = {"count": len(new), "examples": new[:10]}
        if min(n, m) <= opts.small_sample:
            if len(labels) <= 2:
                z, p = st.two_proportion(int(r[0]), n, int(c[0]), m)
                detail.update(category=labels[0], reference_share=r[0] / n, current_share=c[0] / m)
                main = Check("distribution", "z", z, opts.p_value, "p_value", p, n, m, p < opts.p_value,
                             detail=detail)
            else:
                chi, p = st.chi_square(r, c)
                main = Check("distribution", "chi_square", chi, opts.p_value, "p_value", p, n, m, p < opts.p_value,
                             detail=detail)
        else:
            js = st.jensen_shannon(r, c)
            main = Check("distribution", "jensen_shannon", js, opts.jensen_shannon, "statistic", None, n, m,
                         js >= opts.jensen_shannon, detail=detail)
        index = st.psi_counts(r, c, opts.psi_epsilon)
        out.checks += [main, Check("distribution", "psi", index, opts.psi, "statistic", None, n, m,
                                   index >= opts.psi, decisive=False)]
        top = _HISTOGRAM_CATEGORIES
        shown, rest_r, rest_c = labels[:top], r[top:].sum(), c[top:].sum()
        out.histogram = {
            "kind": "categories", "labels": shown + (["(other)"] if len(labels) > top else []),
            "reference": _shares(np.append(r[:top], rest_r) if len(labels) > top else r),
            "current": _shares(np.append(c[:top], rest_c) if len(labels) > top else c),
        }

    def _text(self, out: FieldDrift, ref: Column, cur: Column, rng: np.random.Generator) -> None:
        opts = self.options
        rt, ct = ref.categories(), cur.categories()
        if not _both(out, len(rt), len(ct), "texts"):
            return
        r_len, c_len = _text.lengths(rt), _text.lengths(ct)
        out.checks.extend(self._numeric_checks("length", r_len, c_len))
        out.histogram = {**_bins(r_len, c_len), "of": "length in characters"}
        r_docs, c_docs = _text.sample(rt, opts.text_sample, rng), _text.sample(ct, opts.text_sample, rng)
        if len(r_docs) < sum(rt.values()) or len(c_docs) < sum(ct.values()):
            out.notes.append(f"vocabulary and out-of-vocabulary checks read a random sample of {opts.text_sample} "
                             "texts a side")
        self._vocabulary(out, r_docs, c_docs, rng)
        if opts.embeddings:
            self._embedding(out, r_docs[: opts.embedding_sample], c_docs[: opts.embedding_sample], rng)

    def _vocabulary(self, out: FieldDrift, r_docs: list[str], c_docs: list[str], rng: np.random.Generator) -> None:
        opts = self.options
        found = _text.words(r_docs, c_docs, opts.top_k)
        if found is None:
            out.notes.append("no words in the texts: vocabulary not compared")
            return
        n, m = len(found.ref_bags), len(found.cur_bags)
        detail = {"words": len(found.top), **found.moved()}
        if min(n, m) <= opts.small_sample:
            js, p = st.vocabulary_permutation(found.matrix, found.is_current, opts.permutations, rng)
            out.checks.append(Check("vocabulary", "jensen_shannon", js, opts.p_value, "p_value", p, n, m,
                                    p < opts.p_value, detail=detail))
        else:
            js, _ = st.vocabulary_permutation(found.matrix, found.is_current, 0, rng)
            out.checks.append(Check("vocabulary", "jensen_shannon", js, opts.jensen_shannon, "statistic", None,
                                    n, m, js >= opts.jensen_shannon, detail=detail))
        if n >= 2:
            # Current words the reference never used, against the rate the reference has against itself.
            rate, unseen = _text.oov_rate(found.cur_bags, set().union(*found.ref_bags))
            heldout = _text.heldout_oov_rate(found.ref_bags, rng)
            threshold = heldout + opts.oov_margin
            out.checks.append(Check("oov", "oov_rate", rate, threshold, "statistic", None, n, m, rate >= threshold,
                                    detail={"reference_heldout_rate": heldout,
                                            "examples": [w for w, _ in unseen.most_common(10)]}))

    def _embedding(self, out: FieldDrift, r_docs: list[str], c_docs: list[str], rng: np.random.Generator) -> None:
        if min(len(r_docs), len(c_docs)) < 5:
            out.notes.append("embedding drift needs at least 5 texts a side")
            return
        vectors = self.embed(r_docs + c_docs)
        if vectors is None:
            out.notes.append(f"embedding drift skipped: {self.embedding_error}")
            return
        opts = self.options
        mmd2, p, bandwidth = st.mmd_permutation(vectors[: len(r_docs)], vectors[len(r_docs):], opts.permutations, rng)
        out.checks.append(Check("embedding", "mmd", mmd2, opts.p_value, "p_value", p, len(r_docs), len(c_docs),
                                p < opts.p_value, detail={"kernel": "rbf", "bandwidth": bandwidth,
                                                         "permutations": opts.permutations}))


def _both(out: FieldDrift, n_ref: int, n_cur: int, what: str) -> bool:
    if n_ref and n_cur:
        return True
    side = "reference" if not n_ref else "current"
    out.notes.append(f"no {what} in the {side}: the distribution is not compared")
    return False


def _bins(r: np.ndarray, c: np.ndarray) -> dict[str, Any]:
    """Shares of each side in equal-width bins over the middle 99% of both (the tails go to the end bins)."""
    lo = min(r[int(0.005 * (len(r) - 1))], c[int(0.005 * (len(c) - 1))])
    hi = max(r[int(0.995 * (len(r) - 1))], c[int(0.995 * (len(c) - 1))])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _HISTOGRAM_BINS + 1)
    counts = [np.diff(np.searchsorted(x, edges[1:-1], side="left"), prepend=0, append=len(x)) for x in (r, c)]
    return {"kind": "bins", "edges": [_num(e) for e in edges.tolist()],
            "reference": _shares(counts[0]), "current": _shares(counts[1])}


def _shares(counts: np.ndarray) -> list[float]:
    total = float(counts.sum())
    return [round(float(x) / total, 6) if total else 0.0 for x in counts.tolist()]


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """Detail values as JSON takes them (numpy scalars to Python, NaN to null)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return _num(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
