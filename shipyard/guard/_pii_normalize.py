"""Text normalization for detection, with a map from each normalized index back to the original.

Evasion tricks hide an email or a card number from a plain regex: zero-width characters inside it,
fullwidth or mathematical forms (NFKC folds those), homoglyphs from Cyrillic and Greek, digits of other
scripts, and the many Unicode dashes. Detection runs on the folded text; findings are reported on the
original through ``origin``.
"""

from __future__ import annotations

import re
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


_cache: dict[str, str] = {}
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True)
class OffsetMap:
    """Piecewise offsets: from ``keys[k]`` on, folded index ``j`` is original index ``j + deltas[k]``."""

    keys: list[int]
    deltas: list[int]

    def original(self, j: int) -> int:
        k = bisect_right(self.keys, j) - 1
        return j + (self.deltas[k] if k >= 0 else 0)


def normalize(text: str) -> tuple[str, OffsetMap | None]:
    """``(folded, offsets)``; ``offsets`` is None when nothing changed (pure ASCII, the fast path).

    ASCII runs are copied whole; only non-ASCII characters are folded one by one, and the offset map
    records a breakpoint only where the length changes, so mostly-ASCII text stays cheap.
    """
    if text.isascii():
        return text, None
    parts: list[str] = []
    keys: list[int] = []
    deltas: list[int] = []
    delta = 0
    n = 0  # length of the folded text so far
    pos = 0
    for m in _NON_ASCII.finditer(text):
        s = m.start()
        if s > pos:
            if s - pos and pos - n != delta:
                delta = pos - n
                keys.append(n)
                deltas.append(delta)
            parts.append(text[pos:s])
            n += s - pos
        for i in range(s, m.end()):
            ch = text[i]
            folded = _cache.get(ch)
            if folded is None:
                folded = _fold(ch)
                if len(_cache) < 65536:
                    _cache[ch] = folded
            for c in folded:
                if i - n != delta:
                    delta = i - n
                    keys.append(n)
                    deltas.append(delta)
                parts.append(c)
                n += 1
        pos = m.end()
    if pos < len(text):
        if pos - n != delta:
            keys.append(n)
            deltas.append(pos - n)
        parts.append(text[pos:])
    return "".join(parts), OffsetMap(keys, deltas)


def to_original(offsets: OffsetMap | None, start: int, end: int) -> tuple[int, int]:
    """Map the folded span ``[start, end)`` back to a span of the original text."""
    if offsets is None:
        return start, end
    return offsets.original(start), offsets.original(end - 1) + 1
