"""Text normalization for detection, with a map from each normalized index back to the original.

Evasion tricks hide an email or a card number from a plain regex: zero-width characters inside it,
fullwidth or mathematical forms (NFKC folds those), homoglyphs from Cyrillic and Greek, digits of other
scripts, and the many Unicode dashes. Detection runs on the folded text; findings are reported on the
original through ``origin``.

Speed: only non-ASCII characters can need folding, and the ASCII encoder finds their runs in C (an
error handler is called once per run), so mostly-ASCII text costs one encode. ``classes`` gives the
byte string the structured detectors scan: a digit is ``0`` or ``1`` (zero or not) and a letter ``A``
or ``a``, so their patterns test a small class of bytes where the exact ones test Unicode categories,
and Python checks the values of the few matches.
"""

from __future__ import annotations

import codecs
import threading
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

# Invisible characters dropped outright: zero-width, joiners, BOM, soft hyphen, bidi controls.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)

# Latin look-alikes of Cyrillic and Greek letters, plus punctuation that NFKC leaves alone.
_HOMOGLYPHS = {
    **dict(zip("асеһіјкорԛѕхуԝӏАВСЕНІЈКМОРЅТХУ", "acehijkopqsxywlABCEHIJKMOPSTXY", strict=True)),
    **dict(zip("αεικνορτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "aeikvoptuxABEZHIKMNOPTYX", strict=True)),
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\ufe63": "-", "\uff0d": "-",
    "\u2024": ".", "\u3002": ".", "\uff61": ".",
    "\u0131": "i",
}


def _fold(ch: str) -> str:
    if ch in _INVISIBLE:
        return ""
    mapped = _HOMOGLYPHS.get(ch)
    if mapped is not None:
        return mapped
    out = unicodedata.normalize("NFKC", ch)
    if len(out) == 1:
        if out in _INVISIBLE:
            return ""
        mapped = _HOMOGLYPHS.get(out)
        if mapped is not None:
            return mapped
        if not out.isascii() and out.isdecimal():
            return str(unicodedata.decimal(out))
        if not out.isascii() and out.isspace():
            return " "
    return out


_CACHE_MAX = 8192
_char_cache: dict[str, str] = {}
_run_cache: dict[str, tuple[str, bool]] = {}


def _fold_char(ch: str) -> str:
    f = _char_cache.get(ch)
    if f is None:
        f = _fold(ch)
        if len(_char_cache) < _CACHE_MAX:
            _char_cache[ch] = f
    return f


def _fold_run(run: str) -> tuple[str, bool]:
    """``(folded, one_to_one)`` for a run of non-ASCII characters; ``one_to_one`` when every character
    folds to exactly one, so that indexes are unchanged. Words repeat, so short runs are cached."""
    cached = _run_cache.get(run)
    if cached is None:
        parts = [_fold_char(ch) for ch in run]
        cached = "".join(parts), all(len(p) == 1 for p in parts)
        if len(run) <= 64 and len(_run_cache) < _CACHE_MAX:
            _run_cache[run] = cached
    return cached


# The ASCII encoder calls an error handler once per run of non-ASCII characters: it collects the runs
# (per thread, so concurrent calls do not mix) and encodes each character as its class (see classes).
_local = threading.local()

WORD_NON_ASCII = 0x80  # a letter or digit outside ASCII: \w to the patterns
OTHER_NON_ASCII = 0x81  # any other non-ASCII character


def _class_bytes(run: str) -> bytes:
    if run.isalnum():
        return bytes((WORD_NON_ASCII,)) * len(run)
    return bytes(WORD_NON_ASCII if c.isalnum() else OTHER_NON_ASCII for c in run)


def _collect_runs(err: UnicodeError) -> tuple[bytes, int]:
    assert isinstance(err, UnicodeEncodeError)
    _local.runs.append((err.start, err.end))
    return _class_bytes(err.object[err.start:err.end]), err.end


def _class_of_run(err: UnicodeError) -> tuple[bytes, int]:
    assert isinstance(err, UnicodeEncodeError)
    return _class_bytes(err.object[err.start:err.end]), err.end


codecs.register_error("shipyard.pii.runs", _collect_runs)
codecs.register_error("shipyard.pii.classes", _class_of_run)


def _encode_collecting(text: str) -> tuple[bytes, list[tuple[int, int]]]:
    _local.runs = runs = []
    try:
        encoded = text.encode("ascii", "shipyard.pii.runs")
    finally:
        _local.runs = None
    return encoded, runs


@dataclass(frozen=True)
class OffsetMap:
    """Piecewise offsets: from ``keys[k]`` on, folded index ``j`` is original index ``j + deltas[k]``."""

    keys: list[int]
    deltas: list[int]

    def original(self, j: int) -> int:
        k = bisect_right(self.keys, j) - 1
        return j + (self.deltas[k] if k >= 0 else 0)


def normalize(text: str) -> tuple[str, OffsetMap | None]:
    """``(folded, offsets)``; ``offsets`` is None when every index is unchanged.

    Pure ASCII text is returned as is. Otherwise only the runs of non-ASCII characters are folded, the
    text is rebuilt only if a run changed, and an offset map is built only if some character was
    dropped or expanded (a zero-width character, an NFKC expansion such as "ﬁ"), with a breakpoint
    only where the shift changes.
    """
    folded, offsets, _ = prepare(text, want_classes=False)
    return folded, offsets


def prepare(text: str, *, want_classes: bool = True) -> tuple[str, OffsetMap | None, bytes]:
    """``normalize`` plus the ``classes`` of the folded text (empty unless ``want_classes``), sharing
    the one encode when folding changes nothing."""
    if text.isascii():
        return text, None, text.encode("ascii").translate(_CLASS_TABLE) if want_classes else b""
    encoded, runs = _encode_collecting(text)
    parts: list[str] = []
    changed: list[tuple[int, int, str]] = []
    pos = 0
    shifted = False
    for s, e in runs:
        run = text[s:e]
        folded, one_to_one = _fold_run(run)
        if folded == run:
            continue
        parts.append(text[pos:s])
        parts.append(folded)
        changed.append((s, e, folded))
        pos = e
        shifted = shifted or not one_to_one
    if not parts:
        return text, None, encoded.translate(_CLASS_TABLE) if want_classes else b""
    parts.append(text[pos:])
    folded_text = "".join(parts)
    if shifted:
        return folded_text, _offsets(text, runs), classes(folded_text) if want_classes else b""
    if not want_classes:
        return folded_text, None, b""
    # same length: patch the classes of the changed runs into the first encode rather than encode again
    patched = bytearray(encoded)
    for s, e, folded in changed:
        patched[s:e] = folded.encode("ascii", "shipyard.pii.classes")
    return folded_text, None, bytes(patched).translate(_CLASS_TABLE)


def _offsets(text: str, runs: list[tuple[int, int]]) -> OffsetMap:
    keys: list[int] = []
    deltas: list[int] = []

    def mark(j: int, d: int) -> None:  # from folded index j on, original = folded + d
        if (deltas[-1] if deltas else 0) == d:
            return
        if keys and keys[-1] == j:
            deltas[-1] = d
        else:
            keys.append(j)
            deltas.append(d)

    delta = 0  # original index minus folded index at the current point
    for s, e in runs:
        if _fold_run(text[s:e])[1]:
            continue  # one to one: the shift is unchanged
        j = s - delta  # folded index of the run's first output character
        for i in range(s, e):
            for _ in _fold_char(text[i]):
                mark(j, i - j)  # every character an original one folds to points back at it
                j += 1
        delta = e - j
        mark(j, delta)  # what follows the run
    return OffsetMap(keys, deltas)


def to_original(offsets: OffsetMap | None, start: int, end: int) -> tuple[int, int]:
    """Map the folded span ``[start, end)`` back to a span of the original text."""
    if offsets is None:
        return start, end
    return offsets.original(start), offsets.original(end - 1) + 1


# --- the class string of the structured detectors --------------------------------------------------

_CLASS_TABLE = bytes(
    ord("0") if b == ord("0") else ord("1") if chr(b).isdigit() else ord("A") if chr(b).isupper()
    else ord("a") if chr(b).islower() else b
    for b in range(128)
) + bytes(range(128, 256))


def classes(folded: str) -> bytes:
    """One byte per character of ``folded``: ``0`` for the digit zero, ``1`` for any other digit, ``A``
    or ``a`` for an ASCII letter, 0x80 for another letter or digit, 0x81 for any other non-ASCII
    character, and the character itself for the rest of ASCII (punctuation, spaces, controls)."""
    return folded.encode("ascii", "shipyard.pii.classes").translate(_CLASS_TABLE)
