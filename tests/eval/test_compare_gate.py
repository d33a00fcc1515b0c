import re
from typing import Any

import pydantic
import pytest

from shipyard.eval.compare import compare
from shipyard.eval.gate import GateResult, GateSpec, evaluate
from shipyard.eval.scoring import summarize

CHECKS = [
    {"name": "right-category", "type": "json_field_equals", "severity": "major", "weight": 3.0},
    {"name": "no-pii", "type": "no_pii", "severity": "critical", "weight": 5.0},
]


def attempt(score: float, *, fail: tuple[str, ...] = ()) -> dict[str, Any]:
    checks = {c["name"]: {"passed": c["name"] not in fail, "score": 0.0 if c["name"] in fail else score, "detail": ""}
              for c in CHECKS}
    return {"output": {"category": "billing"}, "text": "", "latency_ms": 10.0, "cost_usd": None, "error": None,
            "trace_id": "t", "checks": checks}


def run_of(run_id: str, outcomes: dict[str, tuple[bool, float]], *, segments: dict[str, str] | None = None,
           fail: tuple[str, ...] = ("right-category",)) -> dict[str, Any]:
    """A run with one attempt per case: (passed, score of its checks)."""
    cases = []
    for case_id, (passed, score) in outcomes.items():
        lang = (segments or {}).get(case_id, "es")
        cases.append({"id": case_id, "segment": {"lang": lang}, "severity": None,
                      "attempts": [attempt(score, fail=() if passed else fail)]})
    return {"run_id": run_id, "feature": "extract-intent", "release": None, "dataset": "evals/intent.jsonl",
            "started_at": 0.0, "finished_at": 1.0, "repeat": 1, "checks": CHECKS, "cases": cases}


def ids(n: int) -> list[str]:
    return [f"c{i:02d}" for i in range(n)]


def test_clear_regression_is_significant() -> None:
    baseline = run_of("base", {i: (True, 1.0) for i in ids(40)})
    candidate = run_of("cand", {i: (n >= 12, 1.0) for n, i in enumerate(ids(40))})
    result = compare(baseline, candidate)
    assert result["counts"] == {"broken": 12, "fixed": 0, "unchanged_fail": 0, "unchanged_pass": 28,
                                "common": 40, "only_baseline": 0, "only_candidate": 0}
    assert result["test"] == "mcnemar"
    assert result["p_value"] == pytest.approx(2 * 0.5**12)
    assert result["pass_rate_delta"] == pytest.approx(-0.3)
    # a broken case keeps the no-pii check: (3 * 0 + 5 * 1) / 8
    assert result["score_delta"]["mean"] == pytest.approx(-12 * (3 / 8) / 40)
    assert result["score_delta"]["high"] < 0
    assert result["score_p_value"] < 0.01 and result["score_test_used"]
    assert result["significant"] and result["regression"] and not result["improvement"]
    broken = [c for c in result["cases"] if c["change"] == "broken"]
    assert len(broken) == 12 and broken[0] == {"id": "c00", "change": "broken", "baseline_score": 1.0,
                                               "candidate_score": 0.625, "delta": -0.375,
                                               "segment": {"lang": "es"}}
    assert result["warnings"] == []


def test_noise_is_not_significant() -> None:
    names = ids(40)
    base = {i: (n not in (0, 1, 2), 0.9 if n % 2 else 0.8) for n, i in enumerate(names)}
    cand = {i: (n not in (3, 4, 5), 0.8 if n % 2 else 0.9) for n, i in enumerate(names)}
    result = compare(run_of("base", base), run_of("cand", cand))
    assert result["counts"]["broken"] == 3 and result["counts"]["fixed"] == 3
    assert result["p_value"] == 1.0
    assert result["score_delta"]["low"] < 0 < result["score_delta"]["high"]
    assert result["score_p_value"] > 0.05
    assert not result["significant"] and not result["regression"] and not result["improvement"]


def test_improvement_and_unmatched_cases() -> None:
    baseline = run_of("base", {**{i: (False, 0.5) for i in ids(15)}, "old": (True, 1.0)})
    candidate = run_of("cand", {**{i: (True, 1.0) for i in ids(15)}, "new": (True, 1.0)})
    result = compare(baseline, candidate)
    assert result["only_baseline"] == ["old"] and result["only_candidate"] == ["new"]
    assert result["counts"]["fixed"] == 15 and result["counts"]["common"] == 15
    assert result["improvement"] and not result["regression"] and result["significant"]
    assert result["baseline"]["pass_rate"] == 0.0 and result["candidate"]["pass_rate"] == 1.0


def test_few_cases_the_bootstrap_alone_is_not_trusted() -> None:
    baseline = run_of("base", {i: (True, 1.0) for i in ids(4)})
    candidate = run_of("cand", {i: (True, 0.9) for i in ids(4)})
    result = compare(baseline, candidate)
    assert result["score_p_value"] < 0.05  # four identical drops fool a bootstrap...
    assert not result["score_test_used"]  # ...so it does not decide
    assert not result["significant"] and not result["regression"]


def test_segment_deltas() -> None:
    names = ids(24)
    segments = {i: ("en" if n < 12 else "fr") for n, i in enumerate(names)}
    segments["c23"] = "de"
    baseline = run_of("base", {i: (True, 1.0) for i in names}, segments=segments)
    candidate = run_of("cand", {i: (n >= 6, 1.0) for n, i in enumerate(names)}, segments=segments)
    result = compare(baseline, candidate)
    en, fr, de = (result["segments"][f"lang={x}"] for x in ("en", "fr", "de"))
    assert en["n"] == 12 and en["broken"] == 6 and en["pass_rate_delta"] == -0.5
    assert en["p_value"] == pytest.approx(2 * 0.5**6)
    assert en["score_delta"] == pytest.approx(-6 * (3 / 8) / 12)
    assert fr["pass_rate_delta"] == 0.0 and fr["score_delta"] == 0.0 and fr["enough"]
    assert not de["enough"] and de["note"] == "too few cases (n=1) for a meaningful interval"


def test_warnings_for_different_datasets() -> None:
    baseline = run_of("base", {"a": (True, 1.0)})
    candidate = run_of("cand", {"b": (True, 1.0)})
    candidate["dataset"] = "evals/other.jsonl"
    result = compare(baseline, candidate)
    assert any("dataset" in w for w in result["warnings"])
    assert "the runs have no case in common" in result["warnings"]
    assert result["score_delta"] == {"mean": None, "low": None, "high": None}
    assert not result["significant"]


# -------------------------------------------------------------------------------------------- the gate


def rule(result: GateResult, name: str) -> Any:
    (found,) = [r for r in result.rules if r.rule == name]
    return found


def mixed_summary() -> dict[str, Any]:
    # 20 cases in es (2 fail), 4 in en (2 fail, one of them critically)
    outcomes = {i: (n not in (0, 1), 1.0) for n, i in enumerate(ids(20))}
    outcomes.update({"en1": (True, 1.0), "en2": (True, 1.0), "en3": (False, 0.9), "en4": (False, 0.9)})
    segments = {f"en{i}": "en" for i in range(1, 5)}
    run = run_of("r", outcomes, segments=segments)
    run["cases"][-1]["attempts"][0]["checks"]["no-pii"] = {"passed": False, "score": 0.0, "detail": "email"}
    return summarize(run)


def test_gate_passes() -> None:
    summary = mixed_summary()
    spec = GateSpec(critical_failures=1, min_pass_rate=0.8, min_weighted_score=0.8, min_segment_score=0.5,
                    min_consistency=1.0)
    result = evaluate(spec, summary)
    assert result.passed and not result.failed
    assert rule(result, "min_pass_rate").message.startswith("pass rate 0.83 >= 0.80 (95% CI ")
    segment_rule = rule(result, "min_segment_score")
    assert segment_rule.passed and not segment_rule.skipped
    assert "skipped, too few cases: lang=en (n=4)" in segment_rule.message


def test_gate_fails_with_human_messages_and_culprits() -> None:
    summary = mixed_summary()
    spec = GateSpec(min_pass_rate=0.9, min_weighted_score=0.95, min_segment_score=0.99)
    result = evaluate(spec, summary)
    assert not result.passed
    critical = rule(result, "critical_failures")
    assert not critical.passed and critical.cases == ["en4"]
    assert critical.message == "1 critical failure (en4) > 0 allowed"
    pass_rate = rule(result, "min_pass_rate")
    assert re.fullmatch(r"pass rate 0\.83 < 0\.90 \(95% CI 0\.\d\d-0\.\d\d\), 20/24 cases", pass_rate.message)
    assert pass_rate.cases == ["c00", "c01", "en3", "en4"]
    score = rule(result, "min_weighted_score")
    assert re.fullmatch(r"weighted score 0\.\d\d < 0\.95 \(95% CI 0\.\d\d-0\.\d\d\)", score.message)
    segment_rule = rule(result, "min_segment_score")
    assert not segment_rule.passed and segment_rule.cases == ["c00", "c01"]
    assert segment_rule.message.startswith("lang=es weighted score 0.96 < 0.99 (95% CI ")
    assert "max_regression" not in [r.rule for r in result.rules]


def test_gate_shows_enough_digits_for_a_near_miss() -> None:
    summary = mixed_summary()
    summary["pass_rate"]["value"] = 0.8996
    message = rule(evaluate({"min_pass_rate": 0.9}, summary), "min_pass_rate").message
    assert message.startswith("pass rate 0.8996 < 0.9000")


def test_gate_skips_what_it_cannot_judge() -> None:
    summary = mixed_summary()
    result = evaluate(GateSpec(critical_failures=None, max_regression="significant"), summary)
    regression = rule(result, "max_regression")
    assert result.passed and regression.skipped and regression.passed
    assert regression.message == "no baseline run to compare with"

    small = summarize(run_of("r", {"a": (True, 1.0), "b": (False, 0.2)}))
    segment_rule = rule(evaluate(GateSpec(min_segment_score=0.9), small), "min_segment_score")
    assert segment_rule.skipped and segment_rule.passed
    assert segment_rule.message == "no segment has enough cases to judge; skipped, too few cases: lang=es (n=2)"


def test_gate_regression_modes() -> None:
    names = ids(40)
    baseline = run_of("base", {i: (True, 1.0) for i in names})
    regressed = run_of("cand", {i: (n >= 12, 1.0) for n, i in enumerate(names)})
    slightly = run_of("cand", {i: (True, 0.99 if n == 0 else 1.0) for n, i in enumerate(names)})
    summary = summarize(regressed)

    significant = rule(evaluate({"critical_failures": None, "max_regression": "significant"}, summary,
                                compare(baseline, regressed)), "max_regression")
    assert not significant.passed and len(significant.cases) == 12
    assert significant.message.startswith("significant drop vs baseline: weighted score -0.113")
    assert "12 broken, 0 fixed of 40 cases (McNemar p=0.000488" in significant.message

    small_drop = compare(baseline, slightly)
    assert not small_drop["significant"]
    assert rule(evaluate({"max_regression": "significant"}, summarize(slightly), small_drop), "max_regression").passed
    any_drop = rule(evaluate({"max_regression": "any"}, summarize(slightly), small_drop), "max_regression")
    assert not any_drop.passed and any_drop.cases == ["c00"]
    reported = rule(evaluate({"max_regression": "none"}, summarize(regressed), compare(baseline, regressed)),
                    "max_regression")
    assert reported.passed and reported.message.startswith("reported only: weighted score -0.113")
    same = rule(evaluate({"max_regression": "any"}, summarize(baseline), compare(baseline, baseline)), "max_regression")
    assert same.passed and same.message.startswith("no drop vs baseline")


def test_gate_consistency() -> None:
    run = run_of("r", {"a": (True, 1.0), "b": (True, 1.0)})
    run["cases"][1]["attempts"].append({**attempt(1.0), "output": {"category": "technical"}})
    result = evaluate({"min_consistency": 0.9}, summarize(run))
    consistency = rule(result, "min_consistency")
    assert not consistency.passed and consistency.cases == ["b"]
    assert consistency.message.startswith("consistency 0.75 < 0.90")


def test_gate_spec_is_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        GateSpec(min_pass_rat=0.9)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        GateSpec(min_pass_rate=1.5)
    with pytest.raises(pydantic.ValidationError):
        GateSpec(max_regression="some")  # type: ignore[arg-type]
    assert GateSpec().critical_failures == 0
