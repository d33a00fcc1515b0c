"""Risk boundaries as policy: declarative rules over a feature's input and output text.

A rule names one check, where it applies (``input``, ``output`` or ``both``), a severity and an action
(``block``, ``flag`` or ``fallback``; acting is the runtime's business, this module only judges):

- ``match``: a regular expression, run by RE2 (``google-re2``), whose time is linear in the text
  whatever the pattern: a catastrophic pattern such as ``(a+)+$`` cannot stall the gateway, at the
  price of RE2's syntax (no lookaround, no backreferences). The stdlib ``re`` would backtrack
  exponentially on such a pattern, and a timeout cannot interrupt it, so it is not used for patterns
  from the config. The pattern sees the text NFKC-normalized with zero-width characters removed
  (fullwidth letters and ``s\\u200bue`` cannot hide from it); case is the pattern's business: ``(?i)``.
- ``deny_topics``: words or phrases found on word boundaries in the text as the injection screen reads
  it (NFKC, zero-width characters, accents, lookalike letters, case, leetspeak and spelled-out letters
  folded; runs of whitespace made one space), each phrase folded the same way.
- ``require``: a phrase that must appear in the output, compared the same folded way.
- ``max_chars``: the longest output, in characters.
- ``allowed_tools``: the only function names the model may call in its answer.
- ``languages``: ISO 639-1 codes the text may be in, told by ``py3langid`` (a naive Bayes model over
  byte n-grams that ships inside its wheel: no network). A text with fewer than ``MIN_LETTERS`` letters
  is not judged, nor one whose likeliest language gets less than ``MIN_CONFIDENCE`` (codes, URLs, lists
  of part numbers); a text is out of bounds when the allowed languages together get less than
  ``MIN_ALLOWED_SHARE`` of the model's probability (close calls such as Indonesian and Malay pass). A
  long text is judged by its first ``LANGUAGE_SAMPLE`` characters.

``Policy.evaluate(text, where, tools)`` judges a whole text; ``Policy.stream()`` judges an answer as it
streams: each new piece is checked together with the text just before it (``OVERLAP`` characters for a
``match``; for ``deny_topics``, enough for the longest topic spelled out with a character between its
letters), so that a phrase split across chunks is caught; ``finish()`` judges the whole answer once
more at its end (where ``require`` and ``languages`` are judged, and a ``match`` longer than the
overlap is found). Judged as it arrives, the text so far is read as if it ended there: ``\\b``, ``$``
and a topic's closing word boundary hold at the end of a piece (the cautious reading: "sue" in a piece
that ends there is caught even if "d" follows).

Violations name the rule and the check, never the text that was caught. Plain values in, plain values
out; this module never imports the runtime.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import re2  # type: ignore[import-untyped]

from .injection import _INVISIBLE, normalize

__all__ = [
    "ACTIONS",
    "CHECKS",
    "LANGUAGES",
    "LANGUAGE_SAMPLE",
    "MIN_ALLOWED_SHARE",
    "MIN_CONFIDENCE",
    "MIN_LETTERS",
    "OUTPUT_ONLY",
    "OVERLAP",
    "Policy",
    "PolicyStream",
    "Rule",
    "Violation",
    "build_rule",
    "compile_pattern",
    "fold",
]

ACTIONS: tuple[str, ...] = ("block", "flag", "fallback")
CHECKS: tuple[str, ...] = ("match", "deny_topics", "require", "max_chars", "allowed_tools", "languages")
OUTPUT_ONLY: frozenset[str] = frozenset({"require", "max_chars", "allowed_tools"})
OVERLAP = 256
"""Characters of earlier text checked again with each streamed piece."""
MIN_LETTERS = 20
MIN_CONFIDENCE = 0.3
LANGUAGE_SAMPLE = 2000
MIN_ALLOWED_SHARE = 0.2

# The ISO 639-1 codes py3langid's model knows (tests/guard/test_policy.py checks this against the model),
# here so that a config can be checked without loading the model.
_CODES = """
    af am an ar as az ba be bg bn br bs ca cs cy da de dz el en eo es et eu fa fi fo fr fy ga gd gl gu ha
    he hi hr ht hu hy id ig is it ja jv ka kk km kn ko ku ky la lb lg ln lo lt lv mg mk ml mn mr ms mt my
    ne nl nn no oc om or pa pl ps pt qu ro ru rw sa se si sk sl sn so sq sr st sv sw ta te tg th tk tl tr
    tt ug uk ur uz vi vo wa xh yo zh zu
"""
LANGUAGES: frozenset[str] = frozenset(_CODES.split())
# The model's labels that are varieties of an ISO 639-1 language: an allowed "ar" admits Egyptian Arabic.
_VARIETY_OF = {"ary": "ar", "arz": "ar", "wuu": "zh", "yue": "zh", "uzs": "uz", "sdh": "ku", "ltg": "lv",
               "nn": "no", "grc": "el", "hbo": "he"}
_NO_LANGUAGE = "zxx"  # the model's label for text without linguistic content

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported as a config error, not logged by RE2


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule that the text broke: its name and check, and what names the breach (never the text)."""

    rule: str
    check: str
    severity: str
    action: str
    where: str
    detail: dict[str, Any] = field(default_factory=dict)


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2; ValueError with RE2's reason if it is invalid or unsupported."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        hint = " (RE2 has no lookaround or backreferences)" if "perl operator" in reason or "escape" in reason else ""
        raise ValueError(f"not a valid RE2 regular expression: {reason}{hint}") from None


def fold(text: str) -> str:
    """Text as ``deny_topics`` and ``require`` compare it: the injection screen's normalization, with every
    run of whitespace one space."""
    return " ".join(normalize(text).split())


def _light(text: str) -> str:
    """NFKC with zero-width characters removed: what ``match`` patterns see."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE)


class _Text:
    """One text to judge, normalized lazily (each view at most once). ``pos``: where searches start (1 when
    the text is a window whose first character is earlier context); ``length``: what ``max_chars``
    counts (a stream's whole answer so far)."""

    __slots__ = ("_folded", "_light", "length", "pos", "raw")

    def __init__(self, raw: str, pos: int = 0, length: int | None = None) -> None:
        self.raw = raw
        self.pos = pos
        self.length = len(raw) if length is None else length
        self._light: str | None = None
        self._folded: str | None = None

    @property
    def light(self) -> str:
        if self._light is None:
            self._light = _light(self.raw)
        return self._light

    @property
    def folded(self) -> str:
        if self._folded is None:
            self._folded = fold(self.raw)
        return self._folded


class Check(Protocol):
    kind: str
    reach: int | None
    """On a stream, the characters of earlier text each piece is judged with (None: the check needs the
    whole answer, and is judged at its end)."""

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None: ...


class Match:
    kind, reach = "match", OVERLAP

    def __init__(self, pattern: str) -> None:
        self.regex = compile_pattern(pattern)

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None:
        return {} if self.regex.search(text.light, text.pos) is not None else None


class DenyTopics:
    kind = "deny_topics"

    def __init__(self, topics: Iterable[str]) -> None:
        folded = sorted({fold(t) for t in topics} - {""}, key=len, reverse=True)
        if not folded:
            raise ValueError("deny_topics needs at least one word or phrase")
        self.reach = 2 * len(folded[0]) + 8  # "s-u-e", "s\u200bu\u200be": twice as long, and a boundary
        # The stdlib engine here: the pattern is ours, escaped literals between two one-character
        # lookarounds, with no quantifier to backtrack over (time at most text x topics), and it reads
        # word boundaries in every script and sees the context before ``pos`` (RE2's \b is ASCII-only).
        alternatives = "|".join(re.escape(t) for t in folded)
        self.regex = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None:
        return {} if self.regex.search(text.folded, text.pos) is not None else None


class Require:
    kind, reach = "require", None

    def __init__(self, phrase: str) -> None:
        self.phrase = fold(phrase)
        if not self.phrase:
            raise ValueError("require needs a phrase with some letters or digits in it")

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None:
        return None if self.phrase in text.folded else {}


class MaxChars:
    kind, reach = "max_chars", 0

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_chars must be at least 1")
        self.limit = limit

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None:
        return {"chars": text.length, "max_chars": self.limit} if text.length > self.limit else None


_TOOL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class AllowedTools:
    kind, reach = "allowed_tools", None  # judged on the tool calls of each piece, not on text

    def __init__(self, names: Iterable[str]) -> None:
        self.allowed = frozenset(names)

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None:
        for name in tools or ():
            if name not in self.allowed:
                # A function's name, not the answer's text; shown only when it looks like one.
                return {"tool": name} if _TOOL_NAME.fullmatch(name) else {}
        return None


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # numpy and a 4.6 MB model: on first use

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _letters(text: str, enough: int) -> int:
    count = 0
    for c in text:
        if c.isalpha():
            count += 1
            if count >= enough:
                break
    return count


class Languages:
    kind, reach = "languages", None

    def __init__(self, codes: Iterable[str]) -> None:
        self.allowed = frozenset(codes)
        unknown = sorted(self.allowed - LANGUAGES)
        if unknown or not self.allowed:
            raise ValueError(f"languages must be ISO 639-1 codes the identifier knows (not {', '.join(unknown)})")
        self.identifier = _identifier()  # loads the model now (about a second): at start, not on a call

    def __call__(self, text: _Text, tools: Sequence[str] | None) -> dict[str, Any] | None:
        # The model reads capitals badly ("YOU SHOULD" is not quite English to it); a long answer is judged
        # by its beginning, which bounds the time (about 0.3 µs a character).
        sample = text.light[:LANGUAGE_SAMPLE].lower()
        if _letters(sample, MIN_LETTERS) < MIN_LETTERS:
            return None
        ranked = self.identifier.rank(sample)
        top, confidence = ranked[0]
        if top == _NO_LANGUAGE or confidence < MIN_CONFIDENCE:
            return None  # codes, URLs, lists of names: no language the model is sure of
        share = sum(p for lang, p in ranked if lang in self.allowed or _VARIETY_OF.get(lang) in self.allowed)
        if share >= MIN_ALLOWED_SHARE:
            return None
        return {"language": _VARIETY_OF.get(top, top)}


_BUILDERS: dict[str, Any] = {
    "match": Match, "deny_topics": DenyTopics, "require": Require, "max_chars": MaxChars,
    "allowed_tools": AllowedTools, "languages": Languages,
}


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    where: str  # input | output | both
    check: Check
    severity: str = "major"
    action: str = "block"

    def applies(self, where: str) -> bool:
        return self.where in (where, "both")


def build_rule(name: str, where: str, *, severity: str = "major", action: str = "block", **check: Any) -> Rule:
    """A rule from its config: exactly one check, e.g. ``build_rule("no-sue", "output", match="(?i)sue")``.
    ValueError when the rule cannot work."""
    given = {k: v for k, v in check.items() if v is not None}
    if len(given) != 1 or not set(given) <= set(CHECKS):
        raise ValueError(f"a rule has exactly one check, one of {', '.join(CHECKS)} (got {', '.join(given) or 'none'})")
    (kind, value), = given.items()
    if where not in ("input", "output", "both"):
        raise ValueError(f"on must be input, output or both (got {where!r})")
    if kind in OUTPUT_ONLY and where != "output":
        raise ValueError(f"{kind} judges the answer: it needs on: output")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)} (got {action!r})")
    return Rule(name, where, _BUILDERS[kind](value), severity, action)


class Policy:
    """A feature's rules, compiled once."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique within a feature")

    def applies(self, where: str) -> bool:
        return any(r.applies(where) for r in self.rules)

    def evaluate(self, text: str, where: str, tools: Sequence[str] | None = None) -> list[Violation]:
        """The rules for ``where`` (input or output) that ``text`` breaks. ``tools``: the function names
        an answer calls (None: not known, ``allowed_tools`` is not judged)."""
        return _judge([r for r in self.rules if r.applies(where)], _Text(text), where, tools)

    def stream(self) -> PolicyStream:
        return PolicyStream(self)


def _judge(rules: Iterable[Rule], text: _Text, where: str, tools: Sequence[str] | None = None) -> list[Violation]:
    found = []
    for rule in rules:
        detail = rule.check(text, tools)
        if detail is not None:
            found.append(Violation(rule.name, rule.check.kind, rule.severity, rule.action, where, detail))
    return found


class PolicyStream:
    """The output rules over a streamed answer. ``feed`` each piece of text (and the function names of
    the tool calls it starts) before passing it on; ``finish`` once the answer is complete. Each returns
    the violations not reported before (a rule is reported once per answer)."""

    def __init__(self, policy: Policy) -> None:
        self.rules = tuple(r for r in policy.rules if r.applies("output"))
        self._tool_rules = [r for r in self.rules if r.check.kind == "allowed_tools"]
        self._text_rules = [r for r in self.rules if r.check.kind != "allowed_tools"]
        self._keep = max([OVERLAP, *(r.check.reach or 0 for r in self.rules)]) + 1  # +1: the context character
        self._parts: list[str] = []
        self._tail = ""
        self._chars = 0
        self._reported: set[str] = set()

    def _new(self, found: list[Violation]) -> list[Violation]:
        fresh = [v for v in found if v.rule not in self._reported]
        self._reported.update(v.rule for v in fresh)
        return fresh

    def feed(self, text: str = "", tools: Sequence[str] = ()) -> list[Violation]:
        found: list[Violation] = []
        if tools:
            found += _judge(self._tool_rules, _Text(""), "output", tools)
        if text:
            before = self._chars
            self._parts.append(text)
            self._chars += len(text)
            views: dict[int, _Text] = {}  # one per reach: each normalized once
            for rule in self._text_rules:
                reach = rule.check.reach
                if reach is None or rule.name in self._reported:
                    continue
                view = views.get(reach)
                if view is None:
                    tail = self._tail[len(self._tail) - reach - 1:] if reach < len(self._tail) else self._tail
                    # The tail's first character is context only when earlier text lies before it, so that
                    # ^ and a topic's leading word boundary do not hold at a cut in the middle of the answer.
                    view = views[reach] = _Text(tail + text, 1 if before > len(tail) else 0, self._chars)
                found += _judge((rule,), view, "output")
            self._tail = (self._tail + text)[-self._keep:]
        return self._new(found)

    def finish(self) -> list[Violation]:
        """The whole answer, judged once more: ``require`` and ``languages``, and matches longer than the
        overlap."""
        whole = _Text("".join(self._parts))
        return self._new(_judge(self._text_rules, whole, "output"))
