"""PII detection and redaction over plain text.

``detect(text)`` finds emails, phones, payment cards (Luhn), IBANs (mod-97), US SSNs, IPv4/IPv6,
dates of birth in context, street addresses, secrets (known prefixes, assignments, high-entropy tokens)
and person names where a name is introduced. It runs on a folded copy of the text (NFKC, zero-width
characters dropped, homoglyphs mapped) and reports offsets into the original.

``Redactor`` applies one action per entity: redact, mask, hash, pseudonymize or block.
``StreamScanner`` does the same over a stream, holding back a bounded tail so that an entity split
across chunks is still caught.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from itertools import accumulate, compress, islice
from operator import itemgetter, lt

from shipyard.errors import PIIBlocked
from shipyard.guard._pii_normalize import normalize, prepare, to_original
from shipyard.guard._pii_patterns import STRUCTURED, Finding, run_rules, structured

__all__ = [
    "ACTIONS",
    "ENTITIES",
    "STRUCTURED_ENTITIES",
    "Finding",
    "PIIBlocked",
    "Redactor",
    "StreamScanner",
    "detect",
    "restore",
]

ENTITIES: tuple[str, ...] = ("email", "phone", "card", "iban", "ssn", "ip", "dob", "address", "secret", "person")
STRUCTURED_ENTITIES: frozenset[str] = STRUCTURED
ACTIONS: tuple[str, ...] = ("redact", "mask", "hash", "pseudonymize", "block")
_MASKABLE = frozenset({"phone", "card", "iban", "ssn"})


def _entity_set(entities: Iterable[str] | None) -> frozenset[str]:
    if entities is None:
        return frozenset(ENTITIES)
    chosen = frozenset(entities)
    unknown = chosen - set(ENTITIES)
    if unknown:
        raise ValueError(f"unknown PII entities: {sorted(unknown)}")
    return chosen


_START = itemgetter(1)
_END = itemgetter(2)


def _resolve(cands: list[Finding]) -> list[Finding]:
    """Non-overlapping candidates, sorted by start: on overlap the higher score wins, then the longer.

    Candidates that overlap nothing pass through; only each cluster of overlapping ones is resolved in
    Python, and the clusters are found with C-level iteration (a running maximum of the ends).
    """
    cands.sort(key=_START)
    if len(cands) < 2:
        return cands
    reach = accumulate(map(_END, cands), max)  # the furthest end so far
    joins = list(compress(range(1, len(cands)), map(lt, map(_START, islice(cands, 1, None)), reach)))
    if not joins:
        return cands
    kept: list[Finding] = []
    done = 0
    i = 0
    while i < len(joins):
        first = last = joins[i]  # candidate `first` overlaps what came before it: a cluster from first-1
        while i + 1 < len(joins) and joins[i + 1] == last + 1:
            i += 1
            last = joins[i]
        kept.extend(cands[done:first - 1])
        kept.extend(_resolve_cluster(cands[first - 1:last + 1]))
        done = last + 1
        i += 1
    kept.extend(cands[done:])
    return kept


def _resolve_cluster(cands: list[Finding]) -> list[Finding]:
    cands.sort(key=lambda c: (c.start, -c.score, c.start - c.end))
    kept: list[Finding] = []
    for c in cands:
        if kept and c.start < kept[-1].end:
            last = kept[-1]
            if (c.score, c.end - c.start) > (last.score, last.end - last.start):
                kept.pop()
                while kept and c.start < kept[-1].end:
                    kept.pop()
                kept.append(c)
            continue
        kept.append(c)
    return kept


def _repeat_names(text: str, cands: list[Finding]) -> list[Finding]:
    """Other mentions of an introduced name ("my name is Ana Ruiz ... Ana") are the same person."""
    names = {c.text for c in cands if c.entity == "person"}
    if not names:
        return []
    tokens = set(names)
    for n in names:
        tokens.update(w for w in n.split(" ") if len(w) > 2)
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")
    return [Finding("person", m.start(), m.end(), m.group(), 0.65) for m in pattern.finditer(text)]


def detect(text: str, entities: Iterable[str] | None = None) -> list[Finding]:
    """Find PII in ``text``: non-overlapping findings sorted by start, offsets into ``text``."""
    wanted = _entity_set(entities)
    want_structured = bool(wanted & STRUCTURED)
    folded, origin, cls = prepare(text, want_classes=want_structured)
    cands = structured(folded, cls, wanted) if want_structured else []
    if wanted - STRUCTURED:
        cands.extend(run_rules(folded, wanted))
        if "person" in wanted:
            cands.extend(_repeat_names(folded, cands))
    kept = _resolve(cands)
    if folded is text:
        return kept  # the detectors' offsets and slices are the original's
    findings = []
    for f in kept:
        start, end = to_original(origin, f.start, f.end)
        findings.append(Finding(f.entity, start, end, text[start:end], f.score))
    return findings


_PLACEHOLDER = re.compile(r"<([A-Z]+)_(\d{1,6})>")


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put the originals back in place of the ``<PERSON_1>`` placeholders of ``mapping``."""
    if not mapping:
        return text
    return _PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


class Redactor:
    """Applies an action per entity: ``redact``, ``mask``, ``hash``, ``pseudonymize`` or ``block``.

    Only the entities named in ``action_by_entity`` are detected. ``hash`` is an HMAC-SHA256 keyed with
    ``hash_key``, so equal values hash equal across calls but cannot be looked up without the key.
    """

    def __init__(self, action_by_entity: Mapping[str, str], *, hash_key: bytes) -> None:
        for entity, action in action_by_entity.items():
            if entity not in ENTITIES:
                raise ValueError(f"unknown PII entity {entity!r}; known: {', '.join(ENTITIES)}")
            if action not in ACTIONS:
                raise ValueError(f"unknown PII action {action!r} for {entity}; known: {', '.join(ACTIONS)}")
        if any(a == "hash" for a in action_by_entity.values()) and not hash_key:
            raise ValueError("the hash action needs a non-empty hash_key")
        self.actions = dict(action_by_entity)
        self._key = hash_key
        self._entities = frozenset(self.actions)

    def detect(self, text: str) -> list[Finding]:
        return detect(text, self._entities) if self._entities else []

    def redact(
        self, text: str, mapping: dict[str, str] | None = None
    ) -> tuple[str, list[Finding], dict[str, str]]:
        """``(redacted text, findings, placeholder -> original)``.

        Pass the ``mapping`` of earlier turns to keep placeholders stable across a conversation.
        Raises ``PIIBlocked`` if an entity whose action is ``block`` is present.
        """
        findings = self.detect(text)
        return self.apply(text, findings, mapping)

    def apply(
        self, text: str, findings: list[Finding], mapping: dict[str, str] | None = None
    ) -> tuple[str, list[Finding], dict[str, str]]:
        for f in findings:
            if self.actions[f.entity] == "block":
                raise PIIBlocked(f.entity)
        mapping = {} if mapping is None else mapping
        out: list[str] = []
        pos = 0
        for f in findings:
            out.append(text[pos:f.start])
            out.append(self._replacement(f, mapping))
            pos = f.end
        out.append(text[pos:])
        return "".join(out), findings, mapping

    def _replacement(self, f: Finding, mapping: dict[str, str]) -> str:
        action = self.actions[f.entity]
        label = f.entity.upper()
        if action == "mask" and f.entity in _MASKABLE:
            return _mask(f.text)
        if action == "hash":
            digest = hmac.new(self._key, f"{f.entity}:{_canonical(f)}".encode(), hashlib.sha256).hexdigest()
            return f"<{label}:{digest[:8]}>"
        if action == "pseudonymize":
            for placeholder, original in mapping.items():
                if original == f.text and placeholder.startswith(f"<{label}_"):
                    return placeholder
            n = 1 + sum(1 for p in mapping if p.startswith(f"<{label}_"))
            placeholder = f"<{label}_{n}>"
            mapping[placeholder] = f.text
            return placeholder
        return f"[{label}]"


def _canonical(f: Finding) -> str:
    folded, _ = normalize(f.text)
    if f.entity in _MASKABLE:
        return "".join(c for c in folded if c.isalnum()).upper()
    return folded.lower() if f.entity == "email" else folded


def _mask(value: str) -> str:
    """Hide every letter and digit but the last four; separators stay, so the shape is kept."""
    total = sum(c.isalnum() for c in value)
    seen = 0
    out = []
    for c in value:
        if c.isalnum():
            seen += 1
            out.append(c if seen > total - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


class StreamScanner:
    """Redacts a stream of text chunks, releasing only what no later chunk can turn into PII.

    ``feed`` returns the redacted text safe to release now and keeps back a tail of about ``hold_back``
    characters (moved back to a word boundary, and to the start of any finding that reaches into it),
    so an entity split across chunks is seen whole. ``flush`` releases the rest. The last ``context``
    released characters are kept for detection only, so "born on" in one chunk still qualifies a date in
    the next.
    """

    def __init__(self, redactor: Redactor, *, hold_back: int = 128, context: int = 64) -> None:
        if hold_back < 1:
            raise ValueError("hold_back must be positive")
        self.redactor = redactor
        self.hold_back = hold_back
        self.context = context
        self.mapping: dict[str, str] = {}
        self.findings: list[Finding] = []
        self._buf = ""
        self._ctx = ""

    def feed(self, chunk: str) -> str:
        self._buf += chunk
        if len(self._buf) <= self.hold_back:
            return ""
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        buf = self._buf
        scan = self._ctx + buf
        offset = len(self._ctx)
        found = [f for f in self.redactor.detect(scan) if f.end > offset]
        if final:
            cut = len(buf)
        else:
            cut = len(buf) - self.hold_back
            ws = max(buf.rfind(" ", 0, cut), buf.rfind("\n", 0, cut))
            if ws >= len(buf) - 2 * self.hold_back:
                cut = ws + 1
            for f in found:
                if f.start - offset < cut < f.end - offset or f.end - offset >= cut > f.start - offset:
                    cut = max(0, f.start - offset)
                    break
            if cut <= 0:
                return ""
        release = buf[:cut]
        mine = [
            Finding(f.entity, f.start - offset, f.end - offset, f.text, f.score)
            for f in found
            if f.start >= offset and f.end - offset <= cut
        ]
        out, _, _ = self.redactor.apply(release, mine, self.mapping)
        self.findings.extend(mine)
        self._buf = buf[cut:]
        self._ctx = (self._ctx + release)[-self.context:] if self.context else ""
        return out
