"""The few statistics an evaluation needs, and when each one applies.

- :func:`wilson`: an interval for a pass rate (k of n cases passed). Unlike the textbook ``p ± z·se`` it
  stays inside [0, 1] and is honest at 0/n, n/n and small n.
- :func:`bootstrap_ci`: an interval for a (weighted) mean of per-case scores, by resampling cases.
- :func:`mcnemar`: did the pass/fail outcome of the *same* cases change between two runs? Only the cases
  that changed count (``b`` broken, ``c`` fixed): exact binomial for fewer than 25 of them, else
  chi-square with continuity correction.
- :func:`paired_bootstrap`: the mean per-case score change between two runs, its interval and a p-value.
- :func:`enough`: whether a group of cases is large enough for its numbers to mean anything.

Intervals are two-sided at ``confidence`` (0.95 by default). Bootstraps take a ``seed`` so that a report
gives the same numbers every time it is computed from the same run. Plain values in, plain floats out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

__all__ = [
    "MAX_HALF_WIDTH",
    "MIN_CASES",
    "bootstrap_ci",
    "enough",
    "mcnemar",
    "paired_bootstrap",
    "wilson",
    "z_value",
]

MIN_CASES = 10
"""Fewest cases in a group (a segment, a whole run) before its numbers are reported as meaningful."""
MAX_HALF_WIDTH = 0.25
"""Widest half-interval (Wilson, on the pass rate) a group's numbers may have and still mean something."""
_EXACT_BELOW = 25
# Resampled indices held at once (n_boot x n cases is chunked to this many), so a large run stays small.
_CHUNK = 2_000_000


def z_value(confidence: float = 0.95) -> float:
    """The two-sided standard-normal quantile for ``confidence`` (1.959... for 0.95)."""
    _check_confidence(confidence)
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials, as ``(low, high)``.

    Use it for pass rates: cases passed out of cases run. ``n == 0`` says nothing: ``(0.0, 1.0)``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def enough(
    n: int,
    k: int,
    *,
    min_cases: int = MIN_CASES,
    max_half_width: float = MAX_HALF_WIDTH,
    confidence: float = 0.95,
) -> bool:
    """Whether ``n`` cases (``k`` of them passed) are enough for their numbers to mean anything.

    Both must hold: at least ``min_cases`` cases, and a Wilson interval on ``k/n`` no wider than
    ``±max_half_width``. With the defaults, 12 cases are always enough, 10 or 11 only when the pass rate
    is far enough from one half.
    """
    if n < max(min_cases, 1):
        return False
    low, high = wilson(k, n, confidence)
    return (high - low) / 2 <= max_half_width


def bootstrap_ci(
    values: Sequence[float],
    weights: Sequence[float] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile-bootstrap interval for the (weighted) mean of ``values``, as ``(low, high)``.

    Use it for mean scores over cases: the cases are resampled with replacement (each keeping its
    weight), the weighted mean taken ``n_boot`` times, and the interval read off those means. It assumes
    the cases are independent draws; repeats of one case belong inside its value, not as extra values.
    One value gives a zero-width interval: see :func:`enough` before trusting a small group.
    """
    _check_confidence(confidence)
    v, w = _arrays(values, weights)
    means = _resampled_means(v, w, n_boot, np.random.default_rng(seed))
    alpha = 1 - confidence
    low, high = np.nanquantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mcnemar(b: int, c: int) -> float:
    """The two-sided p-value of McNemar's test for paired pass/fail outcomes.

    ``b`` counts the cases that passed before and fail now, ``c`` those that failed before and pass now;
    cases with the same outcome in both runs carry no information and are not passed in. Exact
    (binomial, p = 1/2) when ``b + c < 25``, else chi-square with one degree of freedom and continuity
    correction. ``b + c == 0`` gives 1.0.
    """
    if b < 0 or c < 0:
        raise ValueError(f"need b >= 0 and c >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    if n < _EXACT_BELOW:
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
        return min(1.0, 2 * tail)
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    # The chi-square(1) survival function: P(X > x) = erfc(sqrt(x / 2)).
    return math.erfc(math.sqrt(statistic / 2))


def paired_bootstrap(
    deltas: Sequence[float],
    weights: Sequence[float] | None = None,
    n_boot: int = 5000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float, float]:
    """The mean per-case change between two runs: ``(mean, low, high, p)``.

    ``deltas`` holds one value per case present in both runs (candidate score minus baseline score).
    The cases are resampled with replacement; ``low``/``high`` is the percentile interval of the
    resampled means and ``p`` the two-sided bootstrap p-value for "mean change == 0" (twice the smaller
    share of resampled means on either side of zero, with the +1 correction so it is never 0). Few
    cases make the bootstrap overconfident (three cases that all dropped give p ≈ 0.0004): weigh it
    only for groups that are :func:`enough`. No change at all gives p = 1.
    """
    _check_confidence(confidence)
    d, w = _arrays(deltas, weights)
    mean = float(np.average(d, weights=w))
    means = _resampled_means(d, w, n_boot, np.random.default_rng(seed))
    means = means[~np.isnan(means)]
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    count = len(means)
    below = (int(np.count_nonzero(means <= 0)) + 1) / (count + 1)
    above = (int(np.count_nonzero(means >= 0)) + 1) / (count + 1)
    p = min(1.0, 2 * min(below, above))
    return mean, float(low), float(high), p


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _arrays(
    values: Sequence[float], weights: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("need at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite")
    if weights is None:
        return v, None
    w = np.asarray(weights, dtype=float)
    if w.shape != v.shape:
        raise ValueError(f"{w.size} weights for {v.size} values")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return v, w


def _resampled_means(v: np.ndarray, w: np.ndarray | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    n = v.size
    out = np.empty(n_boot)
    rows = max(1, _CHUNK // n)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        if w is None:
            out[start : start + m] = v[idx].mean(axis=1)
        else:
            ws = w[idx]
            totals = ws.sum(axis=1)
            # A resample that drew only zero-weight cases has no mean: NaN, left out of the quantiles.
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + m] = (ws * v[idx]).sum(axis=1) / totals
    return out
