"""From a run (every case of a dataset, each tried ``repeat`` times, every check's verdict on each try) to
the numbers a team decides on: pass rate, weighted score, consistency, critical failures, per segment
and per check, each with its interval.

The rules, in one place:

- A check's weight is its own ``weight``, else its severity's (:data:`SEVERITY_WEIGHTS`: critical 5,
  major 3, minor 1; none 1). A case's weight is its severity's the same way (no severity: 1).
- An attempt passes when it has no ``error`` and every check passed. A declared check without a
  result on a non-erroring attempt counts as failed (a check that did not run has not passed). Its
  score is the weighted mean of its check scores (a result without a score counts 1 if passed, else 0);
  an attempt with an ``error`` scores 0 and fails whatever its checks said.
- A case passes when every attempt passes; its score is the mean of its attempts' scores.
- Consistency of a case: the share of its attempts that agree with the majority on pass/fail *and* give
  the most common output (outputs compared after normalization: JSON with sorted keys, strings
  case-folded with whitespace collapsed; an error counts as one output of its own). One attempt: 1.0.
- A case failed critically when one of its attempts failed a check of severity critical, or the case
  itself is critical and failed.
- Pass rates (overall, per segment, per check) count cases, not attempts, with Wilson intervals:
  repeats of one case are not independent evidence. Weighted scores use a seeded bootstrap over cases.
- A segment (``lang=es``) whose cases are not :func:`~shipyard.eval.stats.enough` keeps its raw values
  but no intervals, and says so in ``note``.

Pure: no I/O; the same run always gives the same summary.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import stats

__all__ = ["SEVERITY_WEIGHTS", "case_results", "check_weights", "normalize_output", "summarize"]

SEVERITY_WEIGHTS: dict[str, float] = {"critical": 5.0, "major": 3.0, "minor": 1.0}
_ERROR_OUTPUT = "\x00error"


def severity_weight(severity: str | None) -> float:
    """The weight a severity stands for: critical 5, major 3, minor 1, none 1."""
    if severity is None:
        return 1.0
    try:
        return SEVERITY_WEIGHTS[severity]
    except KeyError:
        raise ValueError(f"unknown severity {severity!r} (known: critical, major, minor)") from None


def check_weights(checks: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str | None, float]]:
    """Each declared check's ``(severity, weight)``, by name; ``weight`` defaults by severity."""
    out: dict[str, tuple[str | None, float]] = {}
    for check in checks:
        name = check["name"]
        if name in out:
            raise ValueError(f"check {name!r} is declared twice")
        severity = check.get("severity")
        weight = check.get("weight")
        out[name] = (severity, float(weight) if weight is not None else severity_weight(severity))
    return out


def normalize_output(attempt: Mapping[str, Any]) -> str:
    """An attempt's output in a form where two equivalent answers compare equal (see the module doc)."""
    if attempt.get("error"):
        return _ERROR_OUTPUT
    value = attempt.get("output")
    if value is None:
        value = attempt.get("text")
    return json.dumps(_normal(value), sort_keys=True, ensure_ascii=False, default=str)


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 and 1 are the same answer
    return value


def case_results(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every case of ``run`` judged: passed, score, consistency, critical failure, per-attempt verdicts.

    Raises TypeError when ``cases`` is not a list, ValueError on a case without ``id`` or a duplicate id.
    """
    cases = run.get("cases")
    if not isinstance(cases, list):
        raise TypeError("a run needs a list of cases")
    checks = check_weights(run.get("checks") or [])
    seen: set[str] = set()
    out = []
    for case in cases:
        case_id = case.get("id")
        if case_id is None:
            raise ValueError("every case needs an id")
        if case_id in seen:
            raise ValueError(f"case id {case_id!r} appears twice")
        seen.add(case_id)
        out.append(_judge_case(case, checks))
    return out


def _judge_case(case: Mapping[str, Any], checks: Mapping[str, tuple[str | None, float]]) -> dict[str, Any]:
    attempts = [_judge_attempt(a, checks) for a in case.get("attempts") or []]
    severity = case.get("severity")
    weight = severity_weight(severity)
    passed = bool(attempts) and all(a["passed"] for a in attempts)
    score = sum(a["score"] for a in attempts) / len(attempts) if attempts else 0.0
    failed_checks = sorted({name for a in attempts for name in a["failed_checks"]})
    critical_checks = [name for name in failed_checks if name in checks and checks[name][0] == "critical"]
    errors = list(dict.fromkeys(a["error"] for a in (case.get("attempts") or []) if a.get("error")))
    if not attempts:
        errors = ["no attempts"]
    return {
        "id": case["id"],
        "segment": dict(case.get("segment") or {}),
        "severity": severity,
        "weight": weight,
        "passed": passed,
        "score": score,
        "consistency": _consistency(case.get("attempts") or [], [a["passed"] for a in attempts]),
        "critical_failed": bool(critical_checks) or (severity == "critical" and not passed),
        "failed_checks": failed_checks,
        "critical_checks_failed": critical_checks,
        "errors": errors,
        "attempts": attempts,
    }


def _judge_attempt(attempt: Mapping[str, Any], checks: Mapping[str, tuple[str | None, float]]) -> dict[str, Any]:
    results: Mapping[str, Mapping[str, Any]] = attempt.get("checks") or {}
    error = attempt.get("error")
    failed: list[str] = []
    total = weighted = 0.0
    for name in list(checks) + [n for n in results if n not in checks]:
        weight = checks[name][1] if name in checks else 1.0
        result = results.get(name)
        ok = bool(result and result.get("passed"))
        if not ok:
            failed.append(name)
        raw = None if result is None else result.get("score")
        score = float(raw) if raw is not None else (1.0 if ok else 0.0)
        total += weight
        weighted += weight * score
    passed = not error and not failed
    if error:
        score = 0.0
    else:
        score = weighted / total if total > 0 else 1.0
    return {"passed": passed, "score": score, "error": error, "failed_checks": failed}


def _consistency(raw: Sequence[Mapping[str, Any]], passed: Sequence[bool]) -> float:
    if len(raw) <= 1:
        return 1.0
    outputs = [normalize_output(a) for a in raw]
    votes = Counter(passed)
    top_vote = max(votes.values())
    majority = {v for v, count in votes.items() if count == top_vote}
    counts = Counter(outputs)
    top_output = max(counts.values())
    modes = {o for o, count in counts.items() if count == top_output}
    # On a tie, the reading most favourable to agreement: the pair (verdict, output) shared by most tries.
    best = max(
        sum(1 for p, o in zip(passed, outputs, strict=True) if p == v and o == m) for v in majority for m in modes
    )
    return best / len(raw)


def summarize(
    run: Mapping[str, Any], *, min_cases: int = stats.MIN_CASES, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """The whole run in numbers (see the module doc for the rules). Deterministic for a given ``seed``.

    Keys: run metadata (``run_id``, ``feature``, ``release``, ``dataset``, ``repeat``), ``confidence``,
    ``min_cases``, ``n_cases``, ``enough``, ``pass_rate`` {value, low, high, n, k}, ``weighted_score``
    {value, low, high, n}, ``consistency`` {value, low, high, all_agree, n}, ``critical_failures`` [ids],
    ``segments`` {"key=value": {key, value, n, k, pass_rate, weighted_score, enough, note}}, ``checks``
    {name: {type, severity, weight, pass_rate, attempt_pass_rate, failed_cases}}, ``latency_ms``
    {p50, p95, n}, ``cost_usd`` {total, missing} and ``cases`` (:func:`case_results`).
    """
    cases = case_results(run)
    n = len(cases)
    k = sum(1 for c in cases if c["passed"])
    consistency = [c["consistency"] for c in cases]
    return {
        "run_id": run.get("run_id"),
        "feature": run.get("feature"),
        "release": run.get("release"),
        "dataset": run.get("dataset"),
        "repeat": run.get("repeat"),
        "confidence": confidence,
        "min_cases": min_cases,
        "n_cases": n,
        "enough": stats.enough(n, k, min_cases=min_cases, confidence=confidence),
        "pass_rate": _pass_rate(k, n, confidence),
        "weighted_score": _weighted_score(cases, confidence, seed),
        "consistency": {
            **_mean_block(consistency, None, confidence, seed),
            "all_agree": (sum(1 for v in consistency if v >= 1.0) / n) if n else None,
        },
        "critical_failures": [c["id"] for c in cases if c["critical_failed"]],
        "segments": _segments(cases, min_cases, confidence, seed),
        "checks": _checks(run, cases, confidence),
        "latency_ms": _latency(run),
        "cost_usd": _cost(run),
        "cases": cases,
    }


def _pass_rate(k: int, n: int, confidence: float) -> dict[str, Any]:
    low, high = stats.wilson(k, n, confidence)
    return {"value": k / n if n else None, "low": low, "high": high, "n": n, "k": k}


def _weighted_score(cases: Sequence[Mapping[str, Any]], confidence: float, seed: int) -> dict[str, Any]:
    return _mean_block([c["score"] for c in cases], [c["weight"] for c in cases], confidence, seed)


def _mean_block(
    values: Sequence[float], weights: Sequence[float] | None, confidence: float, seed: int
) -> dict[str, Any]:
    if not values:
        return {"value": None, "low": None, "high": None, "n": 0}
    value = float(np.average(values, weights=weights))
    low, high = stats.bootstrap_ci(values, weights, confidence=confidence, seed=seed)
    return {"value": value, "low": low, "high": high, "n": len(values)}


def segment_keys(segment: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(label, key, value)`` for each field of a case's segment: ``("lang=es", "lang", "es")``."""
    return [(f"{key}={value}", str(key), str(value)) for key, value in segment.items()]


def _segments(
    cases: Sequence[Mapping[str, Any]], min_cases: int, confidence: float, seed: int
) -> dict[str, dict[str, Any]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for case in cases:
        for _, key, value in segment_keys(case["segment"]):
            groups.setdefault((key, value), []).append(case)
    out: dict[str, dict[str, Any]] = {}
    for (key, value), members in sorted(groups.items()):
        n = len(members)
        k = sum(1 for c in members if c["passed"])
        block: dict[str, Any] = {
            "key": key,
            "value": value,
            "n": n,
            "k": k,
            "pass_rate": _pass_rate(k, n, confidence),
            "weighted_score": _weighted_score(members, confidence, seed),
            "enough": stats.enough(n, k, min_cases=min_cases, confidence=confidence),
            "note": None,
            "cases": [c["id"] for c in members],
        }
        if not block["enough"]:
            block["note"] = too_few_note(n, k, min_cases, confidence)
            for field in ("pass_rate", "weighted_score"):
                block[field]["low"] = block[field]["high"] = None
        out[f"{key}={value}"] = block
    return out


def too_few_note(n: int, k: int, min_cases: int, confidence: float) -> str:
    """Why a group's numbers mean little: too few cases, or (at the threshold) too wide an interval."""
    if n < min_cases:
        return f"too few cases (n={n}) for a meaningful interval"
    low, high = stats.wilson(k, n, confidence)
    return f"too few cases (n={n}) for a meaningful interval (pass rate ±{(high - low) / 2:.2f})"


def _checks(run: Mapping[str, Any], cases: Sequence[Mapping[str, Any]], confidence: float) -> dict[str, Any]:
    declared = {c["name"]: c for c in run.get("checks") or []}
    weights = check_weights(declared.values())
    raw_attempts = [a for case in run["cases"] for a in case.get("attempts") or []]
    # Declared checks first, in their order, then any a runner reported without declaring it.
    names = list(dict.fromkeys([*declared, *(n for a in raw_attempts for n in a.get("checks") or {})]))
    out: dict[str, Any] = {}
    for name in names:
        failed = [c["id"] for c in cases if name in c["failed_checks"] or not c["attempts"]]
        n = len(cases)
        # Attempts: those that ran the check (or should have); an error alone does not fail a check.
        tried = [a for a in raw_attempts if name in (a.get("checks") or {}) or name in declared]
        ok = sum(1 for a in tried if ((a.get("checks") or {}).get(name) or {}).get("passed"))
        severity, weight = weights.get(name, (None, 1.0))
        out[name] = {
            "type": declared.get(name, {}).get("type"),
            "severity": severity,
            "weight": weight,
            "pass_rate": _pass_rate(n - len(failed), n, confidence),
            "attempt_pass_rate": ok / len(tried) if tried else None,
            "failed_cases": failed,
        }
    return out


def _latency(run: Mapping[str, Any]) -> dict[str, Any]:
    values = [
        float(a["latency_ms"])
        for case in run["cases"]
        for a in case.get("attempts") or []
        if a.get("latency_ms") is not None and math.isfinite(float(a["latency_ms"]))
    ]
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "n": len(values)}


def _cost(run: Mapping[str, Any]) -> dict[str, Any]:
    attempts = [a for case in run["cases"] for a in case.get("attempts") or []]
    known = [float(a["cost_usd"]) for a in attempts if a.get("cost_usd") is not None]
    return {"total": sum(known) if known else (0.0 if not attempts else None), "missing": len(attempts) - len(known)}
