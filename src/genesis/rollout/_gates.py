"""Gates: from a :class:`Comparison` to a verdict (advance, wait, rollback or blocked).

Order matters and is the policy: a sample-ratio mismatch blocks everything (the data cannot
be trusted, not even to roll back); a guardrail rolls back at once; a significant regression
rolls back; below the stage's minimum samples or time the answer is wait; then the fine-tuned
model advances when it is shown better (or not worse, by configuration) and within budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from genesis.config import RolloutGates
from genesis.rollout._stats import Comparison

VerdictKind = Literal["advance", "wait", "rollback", "blocked"]
VERDICTS: tuple[VerdictKind, ...] = ("wait", "advance", "rollback", "blocked")


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    reasons: list[str]
    comparison: Comparison | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        return {
            "verdict": self.kind,
            "reasons": self.reasons,
            "checks": self.checks,
            "comparison": self.comparison.as_dict() if self.comparison else None,
        }


def decide(cmp: Comparison, gates: RolloutGates, stage_age_s: float) -> Verdict:
    if cmp.srm.mismatch:
        why = (
            f"sample-ratio mismatch: observed {cmp.srm.observed[0]} fine-tuned / "
            f"{cmp.srm.observed[1]} baseline against a {cmp.srm.expected_share:.0%} split "
            f"(chi-square p = {cmp.srm.p_value:.2g} < {gates.srm_p}); no verdict until fixed"
        )
        return Verdict("blocked", [why], cmp, {"srm_ok": False})
    tripped = guardrails(cmp, gates)
    if tripped:
        return Verdict("rollback", tripped, cmp, {"guardrails_ok": False})
    regressions = regressions_of(cmp, gates)
    if regressions:
        return Verdict("rollback", regressions, cmp, {"no_regression": False})
    return _advance_or_wait(cmp, gates, stage_age_s)


def guardrails(cmp: Comparison, gates: RolloutGates) -> list[str]:
    """Fixed ceilings, checked on the point estimate once a few requests are in."""
    ft = cmp.finetuned
    if ft.n >= gates.guardrail_min_samples and ft.error_rate is not None:
        if ft.error_rate > gates.error_rate_ceiling:
            return [
                f"guardrail: fine-tuned error rate {ft.error_rate:.1%} over the ceiling "
                f"{gates.error_rate_ceiling:.1%} ({ft.n} requests)"
            ]
    return []


def regressions_of(cmp: Comparison, gates: RolloutGates) -> list[str]:
    """Significant regressions, each on its always-valid interval."""
    found = []
    if cmp.success is not None and cmp.success.high < 0:
        found.append(
            f"success rate significantly lower: difference {cmp.success.estimate:+.1%} "
            f"(always-valid interval {cmp.success.low:+.1%} .. {cmp.success.high:+.1%})"
        )
    if cmp.fallback is not None and cmp.fallback.low > gates.fallback_tolerance:
        found.append(
            f"fallback rate significantly higher: {cmp.fallback.estimate:+.1%} "
            f"(interval from {cmp.fallback.low:+.1%}, tolerance {gates.fallback_tolerance:.1%})"
        )
    if _p95_worse(cmp, gates.p95_latency_tolerance):
        assert cmp.p95_finetuned is not None and cmp.p95_baseline is not None
        found.append(
            f"p95 latency significantly higher: fine-tuned at least "
            f"{cmp.p95_finetuned.low:.0f} ms against baseline at most "
            f"{cmp.p95_baseline.high:.0f} ms (+{gates.p95_latency_tolerance:.0%} tolerated)"
        )
    if cmp.cost_over_budget is not None and cmp.cost_over_budget.low > 0:
        found.append(f"cost per request significantly over {gates.cost_budget_ratio}x the baseline")
    return found


def _p95_worse(cmp: Comparison, tolerance: float) -> bool:
    f, b = cmp.p95_finetuned, cmp.p95_baseline
    return f is not None and b is not None and f.low > (1 + tolerance) * b.high


def _advance_or_wait(cmp: Comparison, gates: RolloutGates, stage_age_s: float) -> Verdict:
    reached = cmp.sample.reached_per_variant
    checks = {
        "srm_ok": True,
        "guardrails_ok": True,
        "no_regression": True,
        "min_samples": reached >= gates.min_samples,
        "min_time": stage_age_s >= gates.min_stage_minutes * 60,
        "success_shown": _success_shown(cmp, gates),
        "cost_within_budget": cmp.cost_over_budget is not None and cmp.cost_over_budget.high < 0,
    }
    missing = [name for name, ok in checks.items() if not ok]
    if not missing:
        return Verdict("advance", [_advance_reason(cmp, gates)], cmp, checks)
    reasons = [_WAIT_REASONS[name](cmp, gates, stage_age_s) for name in missing]
    return Verdict("wait", reasons, cmp, checks)


def _success_shown(cmp: Comparison, gates: RolloutGates) -> bool:
    if cmp.success is None:
        return False
    margin = 0.0 if gates.advance_on == "superiority" else -gates.mde
    return cmp.success.low > margin


def _advance_reason(cmp: Comparison, gates: RolloutGates) -> str:
    assert cmp.success is not None
    shown = "better" if gates.advance_on == "superiority" else f"not worse by {gates.mde:.0%}"
    return (
        f"fine-tuned shown {shown}: success-rate difference {cmp.success.estimate:+.1%} "
        f"(always-valid interval {cmp.success.low:+.1%} .. {cmp.success.high:+.1%}); "
        "no regression, cost within budget, stage minimums met"
    )


_WAIT_REASONS: dict[str, Any] = {
    "min_samples": lambda c, g, a: (
        f"{c.sample.reached_per_variant} requests in the smaller variant; the stage needs "
        f"{g.min_samples} (and about {c.sample.needed_per_variant} to detect "
        f"{g.mde:.0%} in success rate)"
    ),
    "min_time": lambda c, g, a: (
        f"stage running {a / 60:.1f} min of the {g.min_stage_minutes:g} min minimum"
    ),
    "success_shown": lambda c, g, a: (
        "no significant success-rate difference yet"
        + (
            f" (interval {c.success.low:+.1%} .. {c.success.high:+.1%})"
            if c.success is not None
            else ""
        )
    ),
    "cost_within_budget": lambda c, g, a: (
        f"cost per request not yet shown within {g.cost_budget_ratio}x the baseline"
    ),
}
