"""The gate: rules a run must meet before a change ships, judged on a summary (and a comparison with a
baseline run, for the regression rule).

Each rule set in the :class:`GateSpec` gives one :class:`RuleResult`; a rule left ``None`` is not
judged. A rule that cannot be judged (no baseline to compare with, no segment with enough cases) is
reported as skipped, with the reason, and does not fail the gate. Thresholds compare the point values;
messages show the interval beside them so a reader can tell a near miss from a clear one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GateResult", "GateSpec", "RuleResult", "evaluate"]

_EPSILON = 1e-12  # float noise in a delta of identical scores is not a drop


class GateSpec(BaseModel):
    """What a run must meet. Every threshold is optional; ``critical_failures`` defaults to 0.

    ``max_regression`` names which drops against the baseline fail the gate: ``"significant"`` a
    statistically significant one (see :func:`shipyard.eval.compare.compare`), ``"any"`` any drop of the
    weighted score over the common cases, ``"none"`` none (the change is reported, never failed on).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    critical_failures: int | None = Field(0, ge=0)
    min_pass_rate: float | None = Field(None, ge=0, le=1)
    min_weighted_score: float | None = Field(None, ge=0, le=1)
    min_segment_score: float | None = Field(None, ge=0, le=1)
    max_regression: Literal["significant", "none", "any"] | None = None
    min_consistency: float | None = Field(None, ge=0, le=1)


class RuleResult(BaseModel):
    """One rule's verdict; ``cases`` names the cases that made it fail."""

    model_config = ConfigDict(frozen=True)

    rule: str
    passed: bool
    skipped: bool = False
    message: str
    cases: list[str] = Field(default_factory=list)


class GateResult(BaseModel):
    """The gate's verdict: passed when no rule failed (skipped rules do not fail it)."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    rules: list[RuleResult]

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]


def evaluate(
    spec: GateSpec | Mapping[str, Any], summary: Mapping[str, Any], comparison: Mapping[str, Any] | None = None
) -> GateResult:
    """Judge ``summary`` (from :func:`~shipyard.eval.scoring.summarize`) against ``spec``."""
    if not isinstance(spec, GateSpec):
        spec = GateSpec.model_validate(spec)
    rules: list[RuleResult] = []
    if spec.critical_failures is not None:
        rules.append(_critical(spec.critical_failures, summary))
    if spec.min_pass_rate is not None:
        rules.append(_threshold("min_pass_rate", "pass rate", summary["pass_rate"], spec.min_pass_rate,
                                summary, _failed_cases(summary)))
    if spec.min_weighted_score is not None:
        rules.append(_threshold("min_weighted_score", "weighted score", summary["weighted_score"],
                                spec.min_weighted_score, summary, _failed_cases(summary)))
    if spec.min_segment_score is not None:
        rules.append(_segments(spec.min_segment_score, summary))
    if spec.max_regression is not None:
        rules.append(_regression(spec.max_regression, comparison))
    if spec.min_consistency is not None:
        inconsistent = [c["id"] for c in summary.get("cases", []) if c["consistency"] < 1.0]
        rules.append(_threshold("min_consistency", "consistency", summary["consistency"], spec.min_consistency,
                                summary, inconsistent))
    return GateResult(passed=all(r.passed for r in rules), rules=rules)


def _critical(allowed: int, summary: Mapping[str, Any]) -> RuleResult:
    ids = list(summary["critical_failures"])
    passed = len(ids) <= allowed
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    if not ids:
        message = "no critical failures"
    else:
        message = f"{len(ids)} critical failure{'s' if len(ids) != 1 else ''} ({shown})"
        message += f" {'<=' if passed else '>'} {allowed} allowed"
    return RuleResult(rule="critical_failures", passed=passed, message=message, cases=[] if passed else ids)


def _threshold(
    rule: str, label: str, block: Mapping[str, Any], minimum: float, summary: Mapping[str, Any],
    culprits: Sequence[str],
) -> RuleResult:
    value = block.get("value")
    if value is None:
        return RuleResult(rule=rule, passed=True, skipped=True, message=f"{label}: the run has no cases")
    passed = value >= minimum
    shown, threshold = pair(value, minimum)
    message = f"{label} {shown} {'>=' if passed else '<'} {threshold}{interval_text(block, summary)}"
    if "k" in block and "n" in block:
        message += f", {block['k']}/{block['n']} cases"
    return RuleResult(rule=rule, passed=passed, message=message, cases=[] if passed else list(culprits))


def _segments(minimum: float, summary: Mapping[str, Any]) -> RuleResult:
    judged, skipped, failing = [], [], []
    for label, seg in summary["segments"].items():
        if not seg["enough"]:
            skipped.append(f"{label} (n={seg['n']})")
            continue
        judged.append(label)
        if seg["weighted_score"]["value"] < minimum:
            failing.append((label, seg))
    tail = f"; skipped, too few cases: {', '.join(skipped)}" if skipped else ""
    if not judged:
        return RuleResult(rule="min_segment_score", passed=True, skipped=True,
                          message=f"no segment has enough cases to judge{tail}")
    if not failing:
        worst = min(judged, key=lambda s: summary["segments"][s]["weighted_score"]["value"])
        value = summary["segments"][worst]["weighted_score"]["value"]
        shown, threshold = pair(value, minimum)
        message = f"every segment >= {threshold} (lowest {worst} {shown}){tail}"
        return RuleResult(rule="min_segment_score", passed=True, message=message)
    parts = []
    for label, seg in failing:
        shown, threshold = pair(seg["weighted_score"]["value"], minimum)
        parts.append(f"{label} weighted score {shown} < {threshold}{interval_text(seg['weighted_score'], summary)}")
    failed_ids = {c["id"] for c in summary.get("cases", []) if not c["passed"]}
    culprits = list(dict.fromkeys(i for _, seg in failing for i in seg.get("cases", []) if i in failed_ids))
    return RuleResult(rule="min_segment_score", passed=False, message="; ".join(parts) + tail, cases=culprits)


def _regression(mode: str, comparison: Mapping[str, Any] | None) -> RuleResult:
    if comparison is None:
        return RuleResult(rule="max_regression", passed=True, skipped=True,
                          message="no baseline run to compare with")
    if not comparison["counts"]["common"]:
        return RuleResult(rule="max_regression", passed=True, skipped=True,
                          message="the baseline run has no case in common with this one")
    delta = comparison["score_delta"]
    counts = comparison["counts"]
    change = (
        f"weighted score {delta['mean']:+.3f} (95% CI {delta['low']:+.3f} to {delta['high']:+.3f}), "
        f"{counts['broken']} broken, {counts['fixed']} fixed of {counts['common']} cases "
        f"(McNemar p={comparison['p_value']:.3g}, bootstrap p={comparison['score_p_value']:.3g})"
    )
    broken = [c["id"] for c in comparison["cases"] if c["change"] == "broken"]
    if mode == "none":
        return RuleResult(rule="max_regression", passed=True, message=f"reported only: {change}")
    if mode == "significant":
        if comparison["regression"]:
            return RuleResult(rule="max_regression", passed=False, cases=broken,
                              message=f"significant drop vs baseline: {change}")
        verdict = "no significant drop" if not comparison["improvement"] else "significant improvement"
        return RuleResult(rule="max_regression", passed=True, message=f"{verdict} vs baseline: {change}")
    dropped = delta["mean"] < -_EPSILON
    if dropped:
        worse = [c["id"] for c in comparison["cases"] if c["delta"] < -_EPSILON]
        return RuleResult(rule="max_regression", passed=False, cases=list(dict.fromkeys(broken + worse)),
                          message=f"weighted score dropped vs baseline: {change}")
    return RuleResult(rule="max_regression", passed=True, message=f"no drop vs baseline: {change}")


def _failed_cases(summary: Mapping[str, Any]) -> list[str]:
    return [c["id"] for c in summary.get("cases", []) if not c["passed"]]


def pair(value: float, threshold: float) -> tuple[str, str]:
    """Both numbers with 2 decimals, or more when 2 would show a miss as equal (0.899 vs 0.90)."""
    for digits in (2, 3, 4):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b or value == threshold:
            return a, b
    return f"{value:.6g}", f"{threshold:.6g}"


def interval_text(block: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """`` (95% CI 0.81-0.91)``, or nothing when the block has no interval."""
    low, high = block.get("low"), block.get("high")
    if low is None or high is None:
        return ""
    return f" ({round(summary.get('confidence', 0.95) * 100):g}% CI {low:.2f}-{high:.2f})"
