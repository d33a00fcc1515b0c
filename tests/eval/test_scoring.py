import copy
from typing import Any

import pytest

from shipyard.eval.scoring import case_results, normalize_output, summarize

CHECKS = [
    {"name": "right-category", "type": "json_field_equals", "severity": "major", "weight": 3.0},
    {"name": "no-pii", "type": "no_pii", "severity": "critical", "weight": 5.0},
    {"name": "tone", "type": "judge", "severity": "minor"},  # no weight: minor's 1
]


def attempt(
    category: str = "billing",
    *,
    fail: tuple[str, ...] = (),
    scores: dict[str, float] | None = None,
    error: str | None = None,
    latency: float = 100.0,
    cost: float | None = 0.001,
) -> dict[str, Any]:
    checks = {}
    for check in CHECKS:
        name = check["name"]
        passed = name not in fail
        score = (scores or {}).get(name, 1.0 if passed else 0.0)
        checks[name] = {"passed": passed, "score": score, "detail": "" if passed else f"{name} failed"}
    return {"output": None if error else {"category": category}, "text": "" if error else f'{{"category": "{category}"}}',
            "latency_ms": latency, "cost_usd": cost, "error": error, "trace_id": "t", "checks": checks}


def case(case_id: str, attempts: list[dict[str, Any]], *, lang: str = "es", severity: str | None = None,
         tier: str = "gold") -> dict[str, Any]:
    return {"id": case_id, "segment": {"lang": lang, "tier": tier}, "severity": severity, "attempts": attempts}


def run_of(cases: list[dict[str, Any]], repeat: int = 3) -> dict[str, Any]:
    return {"run_id": "r-1", "feature": "extract-intent", "release": "v2", "dataset": "evals/intent.jsonl",
            "started_at": 1700000000.0, "finished_at": 1700000100.0, "repeat": repeat, "checks": CHECKS,
            "cases": cases}


def hand_built_run() -> dict[str, Any]:
    cases = [
        case("ok", [attempt(), attempt(), attempt()]),
        # one attempt errored: the case fails, the error scores 0, and disagrees with the two others
        case("err", [attempt(error="deadline_exceeded: 8s", cost=None), attempt(), attempt()]),
        # repeats disagree: the third says technical and fails the category check
        case("flaky", [attempt(), attempt(), attempt("technical", fail=("right-category",))], lang="en"),
        # a critical check failed once
        case("leak", [attempt(), attempt(fail=("no-pii",)), attempt()], lang="en"),
        # a critical case failing a minor check
        case("vip", [attempt(fail=("tone",), scores={"tone": 0.2})] * 3, lang="en", severity="critical"),
        # partial credit on a passing check
        case("partial", [attempt(scores={"tone": 0.5})] * 3, lang="en", tier="silver"),
    ]
    cases += [case(f"es-{i}", [attempt(), attempt(), attempt()]) for i in range(10)]
    return run_of(cases)


def by_id(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in summary["cases"]}


def test_case_verdicts() -> None:
    cases = by_id(summarize(hand_built_run()))
    assert cases["ok"]["passed"] and cases["ok"]["score"] == 1.0 and cases["ok"]["consistency"] == 1.0

    err = cases["err"]
    assert not err["passed"]
    assert err["score"] == pytest.approx(2 / 3)
    assert err["errors"] == ["deadline_exceeded: 8s"]
    assert err["consistency"] == pytest.approx(2 / 3)
    assert err["attempts"][0] == {"passed": False, "score": 0.0, "error": "deadline_exceeded: 8s", "failed_checks": []}
    assert not err["critical_failed"]  # its checks passed; the case is not critical

    flaky = cases["flaky"]
    assert not flaky["passed"]
    # the third attempt: (3 * 0 + 5 * 1 + 1 * 1) / 9
    assert flaky["score"] == pytest.approx((1 + 1 + 6 / 9) / 3)
    assert flaky["consistency"] == pytest.approx(2 / 3)
    assert flaky["failed_checks"] == ["right-category"]

    leak = cases["leak"]
    assert leak["critical_failed"] and leak["critical_checks_failed"] == ["no-pii"]
    assert leak["score"] == pytest.approx((1 + 4 / 9 + 1) / 3)

    vip = cases["vip"]
    assert vip["critical_failed"] and vip["critical_checks_failed"] == []
    assert vip["weight"] == 5.0
    assert vip["score"] == pytest.approx((3 + 5 + 0.2) / 9)

    partial = cases["partial"]
    assert partial["passed"] and partial["score"] == pytest.approx(8.5 / 9)


def test_overall_numbers() -> None:
    run = hand_built_run()
    summary = summarize(run)
    assert summary["run_id"] == "r-1" and summary["n_cases"] == 16
    assert summary["pass_rate"]["k"] == 12 and summary["pass_rate"]["n"] == 16
    assert summary["pass_rate"]["value"] == 0.75
    assert summary["pass_rate"]["low"] == pytest.approx(0.505, abs=1e-3)
    assert summary["pass_rate"]["high"] == pytest.approx(0.898, abs=1e-3)

    cases = by_id(summary)
    weights = {cid: (5.0 if cid == "vip" else 1.0) for cid in cases}
    expected = sum(weights[c] * cases[c]["score"] for c in cases) / sum(weights.values())
    score = summary["weighted_score"]
    assert score["value"] == pytest.approx(expected)
    assert score["low"] <= score["value"] <= score["high"]

    assert summary["critical_failures"] == ["leak", "vip"]
    # err, flaky and leak each have one attempt out of line (an error, another answer, a failed check)
    assert summary["consistency"]["value"] == pytest.approx((13 + 3 * 2 / 3) / 16)
    assert summary["consistency"]["all_agree"] == pytest.approx(13 / 16)

    checks = summary["checks"]
    assert checks["no-pii"]["severity"] == "critical" and checks["no-pii"]["weight"] == 5.0
    assert checks["tone"]["weight"] == 1.0
    assert checks["no-pii"]["pass_rate"]["k"] == 15 and checks["no-pii"]["failed_cases"] == ["leak"]
    assert checks["tone"]["failed_cases"] == ["vip"]
    assert checks["right-category"]["attempt_pass_rate"] == pytest.approx(47 / 48)

    assert summary["latency_ms"] == {"p50": 100.0, "p95": 100.0, "n": 48}
    assert summary["cost_usd"]["total"] == pytest.approx(0.047)
    assert summary["cost_usd"]["missing"] == 1  # the errored attempt has no cost


def test_segments_with_too_few_cases_keep_values_but_not_intervals() -> None:
    segments = summarize(hand_built_run())["segments"]
    assert list(segments) == ["lang=en", "lang=es", "tier=gold", "tier=silver"]

    es = segments["lang=es"]
    assert es["n"] == 12 and es["k"] == 11 and es["enough"] and es["note"] is None
    assert es["pass_rate"]["low"] is not None and es["weighted_score"]["high"] is not None

    en = segments["lang=en"]
    assert en["n"] == 4 and en["k"] == 1 and not en["enough"]
    assert en["note"] == "too few cases (n=4) for a meaningful interval"
    assert en["pass_rate"]["value"] == 0.25
    assert en["pass_rate"]["low"] is None and en["pass_rate"]["high"] is None
    assert en["weighted_score"]["value"] is not None and en["weighted_score"]["low"] is None
    assert sorted(en["cases"]) == ["flaky", "leak", "partial", "vip"]

    assert summarize(hand_built_run(), min_cases=3)["segments"]["lang=en"]["note"] is not None  # 1/4 is vague
    assert summarize(hand_built_run(), min_cases=20)["segments"]["lang=es"]["enough"] is False


def test_deterministic() -> None:
    assert summarize(hand_built_run()) == summarize(hand_built_run())


def test_consistency_with_one_attempt_and_with_normalized_outputs() -> None:
    one = run_of([case("a", [attempt()]), case("b", [attempt(fail=("tone",))])], repeat=1)
    summary = summarize(one)
    assert [c["consistency"] for c in summary["cases"]] == [1.0, 1.0]
    assert summary["consistency"]["all_agree"] == 1.0

    same = [attempt("Billing"), attempt(" billing  "), attempt("billing")]
    assert case_results(run_of([case("c", same)]))[0]["consistency"] == 1.0
    assert normalize_output({"output": {"b": 1.0, "a": "X  y"}}) == normalize_output({"output": {"a": "x y", "b": 1}})
    assert normalize_output({"output": None, "text": "Hi"}) == normalize_output({"output": None, "text": " hi "})
    assert normalize_output({"error": "boom"}) != normalize_output({"output": None, "text": ""})


def test_missing_check_result_counts_as_failed() -> None:
    run = hand_built_run()
    broken = copy.deepcopy(run["cases"][0])
    del broken["attempts"][1]["checks"]["tone"]
    run["cases"][0] = broken
    ok = by_id(summarize(run))["ok"]
    assert not ok["passed"] and ok["failed_checks"] == ["tone"]
    assert ok["attempts"][1]["score"] == pytest.approx(8 / 9)


def test_a_case_without_attempts_fails() -> None:
    summary = summarize(run_of([case("empty", [])]))
    (empty,) = summary["cases"]
    assert not empty["passed"] and empty["score"] == 0.0 and empty["errors"] == ["no attempts"]
    assert summary["latency_ms"] == {"p50": None, "p95": None, "n": 0}


def test_empty_run() -> None:
    summary = summarize(run_of([]))
    assert summary["pass_rate"] == {"value": None, "low": 0.0, "high": 1.0, "n": 0, "k": 0}
    assert summary["weighted_score"]["value"] is None
    assert summary["segments"] == {} and summary["critical_failures"] == []
    assert not summary["enough"]


def test_malformed_runs() -> None:
    with pytest.raises(ValueError, match="twice"):
        summarize(run_of([case("a", [attempt()]), case("a", [attempt()])]))
    with pytest.raises(TypeError):
        summarize({"checks": CHECKS})
    bad = run_of([case("a", [attempt()])])
    bad["checks"] = [{"name": "x", "severity": "blocker"}]
    with pytest.raises(ValueError, match="severity"):
        summarize(bad)
