"""A candidate run against a baseline run of the same dataset: which cases were fixed or broken, how each
segment moved, and whether the difference is more than noise.

Cases are matched by id; only cases present in both runs are compared (the others are listed). Two tests
answer "is it real?":

- McNemar's test on the pass/fail pairs (``b`` = broken, passed then failed; ``c`` = fixed), which sees
  only the cases whose outcome changed;
- a paired bootstrap on the per-case score changes (weighted by the candidate's case weights), which
  also sees partial credit. A bootstrap over a handful of cases is overconfident, so this test counts
  toward ``significant`` only when at least ``min_cases`` cases are compared (``score_test_used``).

Pure: runs in, a plain dict out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import stats
from .scoring import case_results, segment_keys, too_few_note

__all__ = ["CHANGES", "compare"]

CHANGES = ("broken", "fixed", "unchanged_fail", "unchanged_pass")
_ALPHA = 0.05


def compare(
    baseline_run: Mapping[str, Any],
    candidate_run: Mapping[str, Any],
    *,
    alpha: float = _ALPHA,
    min_cases: int = stats.MIN_CASES,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two runs case by case.

    Keys: ``baseline`` / ``candidate`` (run id, release, and pass rate and weighted score over the
    common cases), ``cases`` [{id, change, baseline_score, candidate_score, delta, segment}], ``counts``
    (fixed, broken, unchanged_pass, unchanged_fail, common, only_baseline, only_candidate),
    ``only_baseline`` / ``only_candidate`` [ids], ``segments`` {"key=value": deltas, counts, p_value,
    enough, note}, ``pass_rate_delta``, ``score_delta`` {mean, low, high}, ``test`` ("mcnemar"),
    ``p_value`` (McNemar), ``score_p_value`` (paired bootstrap), ``score_test_used``, ``alpha``,
    ``significant``, ``regression`` (a significant drop), ``improvement`` (a significant gain) and
    ``warnings`` (runs of different features or datasets).
    """
    base = {c["id"]: c for c in case_results(baseline_run)}
    cand_list = case_results(candidate_run)
    cand = {c["id"]: c for c in cand_list}
    common = [c["id"] for c in cand_list if c["id"] in base]
    rows = []
    for case_id in common:
        b, c = base[case_id], cand[case_id]
        rows.append({
            "id": case_id,
            "change": _change(b["passed"], c["passed"]),
            "baseline_score": b["score"],
            "candidate_score": c["score"],
            "delta": c["score"] - b["score"],
            "segment": c["segment"],
            "weight": c["weight"],
        })
    counts: dict[str, int] = {name: sum(1 for r in rows if r["change"] == name) for name in CHANGES}
    only_baseline = [case_id for case_id in base if case_id not in cand]
    only_candidate = [case_id for case_id in cand if case_id not in base]
    counts.update(common=len(rows), only_baseline=len(only_baseline), only_candidate=len(only_candidate))

    p_value = stats.mcnemar(counts["broken"], counts["fixed"])
    if rows:
        mean, low, high, score_p = stats.paired_bootstrap(
            [r["delta"] for r in rows], [r["weight"] for r in rows], seed=seed
        )
        score_delta: dict[str, float | None] = {"mean": mean, "low": low, "high": high}
    else:
        score_p, score_delta = 1.0, {"mean": None, "low": None, "high": None}
    score_test_used = len(rows) >= min_cases
    pass_p = p_value < alpha
    score_sig = score_test_used and score_p < alpha
    mean_delta = score_delta["mean"] or 0.0
    regression = (pass_p and counts["broken"] > counts["fixed"]) or (score_sig and mean_delta < 0)
    improvement = (pass_p and counts["fixed"] > counts["broken"]) or (score_sig and mean_delta > 0)
    baseline_side, candidate_side = _side(baseline_run, rows, "baseline"), _side(candidate_run, rows, "candidate")
    return {
        "baseline": baseline_side,
        "candidate": candidate_side,
        "cases": [{k: v for k, v in r.items() if k != "weight"} for r in rows],
        "counts": counts,
        "only_baseline": only_baseline,
        "only_candidate": only_candidate,
        "segments": _segments(rows, min_cases),
        "pass_rate_delta": _delta(candidate_side["pass_rate"], baseline_side["pass_rate"]),
        "score_delta": score_delta,
        "test": "mcnemar",
        "p_value": p_value,
        "score_p_value": score_p,
        "score_test_used": score_test_used,
        "alpha": alpha,
        "significant": pass_p or score_sig,
        "regression": regression,
        "improvement": improvement,
        "warnings": _warnings(baseline_run, candidate_run, rows),
    }


def _change(before: bool, after: bool) -> str:
    if before and after:
        return "unchanged_pass"
    if before:
        return "broken"
    if after:
        return "fixed"
    return "unchanged_fail"


def _side(run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], side: str) -> dict[str, Any]:
    passed = [r["change"] in (("unchanged_pass", "broken") if side == "baseline" else ("unchanged_pass", "fixed"))
              for r in rows]
    scores = [r[f"{side}_score"] for r in rows]
    return {
        "run_id": run.get("run_id"),
        "release": run.get("release"),
        "pass_rate": sum(passed) / len(rows) if rows else None,
        "weighted_score": float(np.average(scores, weights=[r["weight"] for r in rows])) if rows else None,
    }


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _segments(rows: Sequence[Mapping[str, Any]], min_cases: int) -> dict[str, dict[str, Any]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        for _, key, value in segment_keys(row["segment"]):
            groups.setdefault((key, value), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for (key, value), members in sorted(groups.items()):
        n = len(members)
        broken = sum(1 for r in members if r["change"] == "broken")
        fixed = sum(1 for r in members if r["change"] == "fixed")
        base_pass = sum(1 for r in members if r["change"] in ("unchanged_pass", "broken"))
        cand_pass = sum(1 for r in members if r["change"] in ("unchanged_pass", "fixed"))
        weights = [r["weight"] for r in members]
        base_score = float(np.average([r["baseline_score"] for r in members], weights=weights))
        cand_score = float(np.average([r["candidate_score"] for r in members], weights=weights))
        is_enough = stats.enough(n, cand_pass, min_cases=min_cases)
        out[f"{key}={value}"] = {
            "key": key,
            "value": value,
            "n": n,
            "baseline_pass_rate": base_pass / n,
            "candidate_pass_rate": cand_pass / n,
            "pass_rate_delta": (cand_pass - base_pass) / n,
            "baseline_score": base_score,
            "candidate_score": cand_score,
            "score_delta": cand_score - base_score,
            "broken": broken,
            "fixed": fixed,
            "p_value": stats.mcnemar(broken, fixed),
            "enough": is_enough,
            "note": None if is_enough else too_few_note(n, cand_pass, min_cases, 0.95),
        }
    return out


def _warnings(
    baseline_run: Mapping[str, Any], candidate_run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> list[str]:
    out = []
    for field in ("feature", "dataset"):
        before, after = baseline_run.get(field), candidate_run.get(field)
        if before != after:
            out.append(f"the runs are of different {field}s: {before!r} and {after!r}")
    if not rows:
        out.append("the runs have no case in common")
    return out
