"""Scoring of the PII detector against a labeled set: per-entity precision, recall and F1.

Shared by ``bench/pii.py`` and the tests, so the figures the bench prints are the ones the tests gate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

Span = tuple[str, int, int]


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def load_eval_set() -> list[dict[str, Any]]:
    """The shipped labeled set, ``shipyard/guard/data/pii_eval.jsonl``."""
    text = resources.files("shipyard.guard").joinpath("data/pii_eval.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def score(
    records: Iterable[dict[str, Any]],
    predict: Callable[[str], list[Span]],
    *,
    overlap: bool = False,
) -> dict[str, Score]:
    """Per-entity counts: exact span match, or (``overlap=True``) any overlap of the same entity."""
    scores: dict[str, Score] = {}
    for rec in records:
        gold = [(s["entity"], s["start"], s["end"]) for s in rec["spans"]]
        pred = predict(rec["text"])
        for ent in {g[0] for g in gold} | {p[0] for p in pred}:
            scores.setdefault(ent, Score())
        matched: set[int] = set()
        for p in pred:
            hit = None
            for i, g in enumerate(gold):
                if i not in matched and (p == g if not overlap else _overlaps(p, g)):
                    hit = i
                    break
            if hit is None:
                scores[p[0]].fp += 1
            else:
                matched.add(hit)
                scores[p[0]].tp += 1
        for i, g in enumerate(gold):
            if i not in matched:
                scores[g[0]].fn += 1
    return scores


def micro(scores: dict[str, Score], entities: Iterable[str]) -> Score:
    total = Score()
    for ent in entities:
        s = scores.get(ent)
        if s:
            total.tp, total.fp, total.fn = total.tp + s.tp, total.fp + s.fp, total.fn + s.fn
    return total


TARGETS = {
    "email": 0.95, "card": 0.95, "iban": 0.95, "phone": 0.95, "ssn": 0.95, "ip": 0.95,
    "person": 0.80, "address": 0.80,
}
