"""One field's values made ready for the drift statistics: missing values counted, numbers sorted once,
everything else tallied, and the field's type inferred.

A column arrives as a numpy array (the fast path: a float array is used as it is) or as a list of
Python values (from JSONL, CSV or row dicts). Missing is None, NaN, ±inf and a blank string. A list is
tallied with one ``Counter`` pass (hashing, no sort: ~0.2 s per million short strings), so categories
and texts are handled once per distinct value, not once per row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

__all__ = ["TYPES", "Column", "infer_type", "label"]

TYPES = ("numeric", "categorical", "text")
_NUMBER_SHARE = 0.9
"""A field whose values are at least this share numbers (the rest text such as "n/a") is numeric."""
_WORD_SAMPLE = 5000
"""Distinct strings looked at to tell free text from labels."""


def label(value: Any) -> str:
    """The category a value stands for: 3, 3.0 and "3" are one category; true/false as JSON writes them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))
    return str(value)


@dataclass
class Column:
    """A field's values on one side. ``numbers`` holds the finite numbers, sorted; ``tally`` every other
    value that is not missing (strings, booleans, JSON of lists) with how often it occurs."""

    total: int
    missing: int
    numbers: np.ndarray
    tally: dict[Any, int]
    _categories: dict[str, int] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, values: Sequence[Any] | np.ndarray) -> Column:
        if isinstance(values, np.ndarray):
            if values.dtype.kind in "iuf":
                return cls._of_floats(values.astype(np.float64, copy=False))
            if values.dtype.kind == "b":
                hits = int(np.count_nonzero(values))
                tally = {k: v for k, v in ((True, hits), (False, len(values) - hits)) if v}
                return cls(len(values), 0, np.empty(0), tally)
            values = values.tolist()  # str, bytes and object arrays: Python values are faster to hash
        elif not isinstance(values, list):
            values = list(values)
        kinds = set(map(type, values))
        if kinds and all(_is_number_type(k) or k is type(None) for k in kinds) and kinds != {type(None)}:
            return cls._of_floats(np.array(values, dtype=np.float64))  # None becomes NaN
        if any(k in (list, dict, tuple, set) for k in kinds):
            values = [_hashable(v) for v in values]
        counts = Counter(values)
        missing = 0
        numbers: list[float] = []
        repeats: list[int] = []
        tally: dict[Any, int] = {}
        for key, n in counts.items():
            if key is None or (isinstance(key, str) and not key.strip()):
                missing += n
            elif isinstance(key, float | int | np.number) and not isinstance(key, bool | np.bool_):
                if math.isfinite(key):
                    numbers.append(float(key))
                    repeats.append(n)
                else:
                    missing += n
            else:
                tally[key] = n
        spread = np.sort(np.repeat(np.array(numbers, dtype=np.float64), repeats)) if numbers else np.empty(0)
        return cls(len(values), missing, spread, tally)

    @classmethod
    def _of_floats(cls, array: np.ndarray) -> Column:
        finite = np.isfinite(array)
        kept = array[finite] if not finite.all() else array
        return cls(len(array), len(array) - len(kept), np.sort(kept), {})

    @property
    def present(self) -> int:
        """Values that are not missing."""
        return self.total - self.missing

    @property
    def kind(self) -> str:
        """empty, number, bool, string or mixed: what the values are, before any type is chosen."""
        if not len(self.numbers) and not self.tally:
            return "empty"
        if not self.tally:
            return "number"
        if not len(self.numbers):
            if all(isinstance(k, bool | np.bool_) for k in self.tally):
                return "bool"
            if all(isinstance(k, str) for k in self.tally):
                return "string"
        return "mixed"

    def distinct_numbers(self) -> int:
        x = self.numbers
        return 0 if not len(x) else 1 + int(np.count_nonzero(x[1:] != x[:-1]))

    def numeric(self) -> tuple[np.ndarray, int]:
        """(the values as sorted finite floats, how many values are not numbers): strings that read as a
        number count as one; other values are left out and counted."""
        if not self.tally:
            return self.numbers, 0
        extra: list[float] = []
        repeats: list[int] = []
        bad = 0
        for key, n in self.tally.items():
            value = _as_number(key)
            if value is None:
                bad += n
            else:
                extra.append(value)
                repeats.append(n)
        if not extra:
            return self.numbers, bad
        merged = np.concatenate([self.numbers, np.repeat(np.array(extra), repeats)])
        return np.sort(merged), bad

    def categories(self) -> dict[str, int]:
        """Each category (a value's ``label``) and its count."""
        if self._categories is None:
            out: dict[str, int] = {}
            x = self.numbers
            if len(x):
                starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
                counts = np.diff(np.r_[starts, len(x)])
                for value, n in zip(x[starts].tolist(), counts.tolist(), strict=True):
                    key = label(value)
                    out[key] = out.get(key, 0) + n
            for value, n in self.tally.items():
                key = label(value)
                out[key] = out.get(key, 0) + n
            self._categories = out
        return self._categories


def infer_type(ref: Column, cur: Column, max_unique: int) -> tuple[str, str]:
    """(numeric | categorical | text | empty, why): read from the reference, or from the current table
    where the reference has no value of the field."""
    base = ref if ref.present else cur
    kind = base.kind
    if kind == "empty":
        return "empty", "no values on either side"
    if kind == "number":
        distinct = base.distinct_numbers()
        if distinct <= max_unique:
            plural = "s" if distinct != 1 else ""
            return "categorical", f"numbers with {distinct} distinct value{plural} (<= {max_unique})"
        return "numeric", "numbers"
    if kind == "bool":
        return "categorical", "true/false values"
    if kind == "mixed":
        share = len(base.numbers) / max(base.present, 1)
        if share >= _NUMBER_SHARE and base.distinct_numbers() > max_unique:
            return "numeric", f"{share:.0%} numbers (the rest is left out as not a number)"
        return "categorical", "a mix of numbers and other values"
    words = spaced = seen = 0
    for i, (text, n) in enumerate(base.tally.items()):
        if i == _WORD_SAMPLE:
            break
        count = len(text.split())
        words += count * n
        spaced += n if count > 1 else 0
        seen += n
    mean_words = words / max(seen, 1)
    distinct_share = len(base.tally) / max(base.present, 1)
    if mean_words >= 3:
        return "text", f"strings of {mean_words:.1f} words on average"
    if distinct_share > 0.5 and spaced / max(seen, 1) >= 0.5:
        return "text", "strings, mostly distinct, with spaces"
    return "categorical", f"short strings ({len(base.tally)} distinct, {mean_words:.1f} words on average)"


def _is_number_type(kind: type) -> bool:
    return issubclass(kind, int | float | np.integer | np.floating) and not issubclass(kind, bool | np.bool_)


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict | tuple | set):
        return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    return value


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.number):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
