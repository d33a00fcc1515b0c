"""The word-level pieces of text drift (shipyard/monitor/drift.py): texts sampled, split into words,
counted into a documents x words matrix, and the out-of-vocabulary rates."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Words", "heldout_oov_rate", "lengths", "oov_rate", "sample", "words"]

_TOKEN = re.compile(r"\w+")


def lengths(texts: Mapping[str, int]) -> np.ndarray:
    """Each text's length in characters, once per occurrence, sorted."""
    each = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    return np.sort(np.repeat(each, np.fromiter(texts.values(), dtype=np.int64, count=len(texts))))


def sample(texts: Mapping[str, int], limit: int, rng: np.random.Generator) -> list[str]:
    """Up to ``limit`` of the texts (each as many times as it occurs), in random order."""
    keys = list(texts)
    which = np.repeat(np.arange(len(keys)), np.fromiter(texts.values(), dtype=np.int64, count=len(keys)))
    picked = rng.permutation(len(which))[:limit]
    return [keys[i] for i in which[picked].tolist()]


@dataclass
class Words:
    """The words of two samples of texts: a bag per text, and the counts of the ``top`` words (the last
    column: every other word) per text, reference rows first."""

    ref_bags: list[Counter[str]]
    cur_bags: list[Counter[str]]
    top: list[str]
    matrix: np.ndarray
    is_current: np.ndarray

    def moved(self, k: int = 5) -> dict[str, list[str]]:
        """The top words whose share rose most from reference to current, and those that fell most."""
        ref = self.matrix[~self.is_current].sum(axis=0)
        cur = self.matrix[self.is_current].sum(axis=0)
        ref_share, cur_share = ref / max(ref.sum(), 1), cur / max(cur.sum(), 1)
        order = np.argsort(cur_share[:-1] - ref_share[:-1], kind="stable")
        return {"rising": [self.top[i] for i in order[::-1][:k] if cur_share[i] > ref_share[i]],
                "falling": [self.top[i] for i in order[:k] if cur_share[i] < ref_share[i]]}


def words(ref_texts: list[str], cur_texts: list[str], top_k: int) -> Words | None:
    """The words of both samples (lowercased runs of letters and digits); None when there are none."""
    cache: dict[str, Counter[str]] = {}

    def bag(text: str) -> Counter[str]:
        found = cache.get(text)
        if found is None:
            found = cache[text] = Counter(_TOKEN.findall(text.lower()))
        return found

    ref_bags, cur_bags = [bag(t) for t in ref_texts], [bag(t) for t in cur_texts]
    pooled: Counter[str] = Counter()
    for found in (*ref_bags, *cur_bags):
        pooled.update(found)
    if not pooled:
        return None
    # The top words of both sides together, chosen the same way whichever side a text is on: taken from
    # the reference alone they would favour it, and a permutation test would then see drift in noise.
    top = sorted(pooled, key=lambda w: (-pooled[w], w))[:top_k]
    index = {w: i for i, w in enumerate(top)}
    matrix = np.zeros((len(ref_bags) + len(cur_bags), len(top) + 1))
    for d, found in enumerate((*ref_bags, *cur_bags)):
        for w, k in found.items():
            matrix[d, index.get(w, len(top))] += k
    is_current = np.zeros(len(matrix), dtype=bool)
    is_current[len(ref_bags):] = True
    return Words(ref_bags, cur_bags, top, matrix, is_current)


def oov_rate(bags: list[Counter[str]], vocabulary: set[str]) -> tuple[float, Counter[str]]:
    """(the share of the words in ``bags`` that are not in ``vocabulary``, those words and their counts)."""
    total = 0
    unseen: Counter[str] = Counter()
    for found in bags:
        for w, k in found.items():
            total += k
            if w not in vocabulary:
                unseen[w] += k
    return (sum(unseen.values()) / total if total else 0.0), unseen


def heldout_oov_rate(bags: list[Counter[str]], rng: np.random.Generator) -> float:
    """The reference's own out-of-vocabulary rate: its texts dealt into two random halves, the share of
    the second half's words the first half never used. A half has a smaller vocabulary than the whole
    reference that current texts are checked against, so this sets the bar high, not low."""
    order = rng.permutation(len(bags))
    half = len(order) // 2
    vocabulary = set().union(*(bags[i] for i in order[:half]))
    return oov_rate([bags[i] for i in order[half:]], vocabulary)[0]
