"""Per-variant statistics and sequential comparisons that may be looked at any time.

Method and references: ``docs/rollout-statistics.md``. In short:

- rates and means (success, errors, fallbacks, cost per request): the normal-mixture
  sequential probability ratio test (mSPRT, Johari et al. 2017/2022) on the difference of the
  two variants' means, inverted into an always-valid confidence sequence (Robbins 1970;
  Howard et al. 2021; Waudby-Smith et al. 2023 for the plug-in variance);
- p95 latency: exact distribution-free confidence bounds from order statistics (binomial),
  with the error spent over the looks as ``alpha * 6 / (pi^2 k^2)`` at look ``k``, looks
  being fixed points of the request count (every ``look_every`` requests);
- sample-ratio mismatch: chi-square goodness of fit of the two counts against the split.

Everything is vectorised over NumPy arrays, so a simulation evaluates thousands of looks in
one call. The family-wise alpha is split evenly over the four comparisons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from genesis.events import RequestEvent

if TYPE_CHECKING:
    from types import ModuleType

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
METRICS = 4  # success, p95 latency, fallback, cost: alpha is split over these
MIN_TEST_N = 30  # per variant: below it no comparison is reported significant


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant's requests in a window, as arrays (one entry per request)."""

    success: BoolArray
    error: BoolArray
    fallback: BoolArray
    abstained: BoolArray
    latency_ms: FloatArray
    cost_usd: FloatArray
    ts: FloatArray
    feedback: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def n(self) -> int:
        return int(self.success.size)

    def head(self, count: int) -> Arm:
        return Arm(
            self.success[:count],
            self.error[:count],
            self.fallback[:count],
            self.abstained[:count],
            self.latency_ms[:count],
            self.cost_usd[:count],
            self.ts[:count],
            self.feedback,
        )

    @classmethod
    def of(cls, events: list[RequestEvent], feedback: dict[str, float] | None = None) -> Arm:
        scores = feedback or {}
        return cls(
            success=np.array([e.outcome == "ok" and not e.abstained for e in events], bool),
            error=np.array([e.outcome == "error" for e in events], bool),
            fallback=np.array([e.fallback for e in events], bool),
            abstained=np.array([e.abstained or e.outcome == "abstained" for e in events], bool),
            latency_ms=np.array([e.latency_ms for e in events], float),
            cost_usd=np.array([e.cost_usd for e in events], float),
            ts=np.array([e.ts for e in events], float),
            feedback=np.array([scores[e.request_id] for e in events if e.request_id in scores]),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """Descriptive statistics of one variant (``ci`` = fixed-time 95% Wilson interval)."""

    n: int
    success_rate: float | None
    success_ci: tuple[float, float] | None
    error_rate: float | None
    fallback_rate: float | None
    abstention_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    cost_per_request_usd: float | None
    feedback_n: int
    feedback_mean: float | None


@dataclass(frozen=True, slots=True)
class Interval:
    """An always-valid interval for ``finetuned - baseline`` (or a bound pair)."""

    estimate: float
    low: float
    high: float
    alpha: float

    def as_dict(self) -> dict[str, float]:
        return {k: _round(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class SampleSize:
    reached_per_variant: int  # the smaller variant's count
    needed_per_variant: int  # sequential: see docs/rollout-statistics.md
    needed_fixed_horizon: int  # what a single look at the end would need, for reference


@dataclass(frozen=True, slots=True)
class Srm:
    observed: tuple[int, int]  # (finetuned, baseline)
    expected_share: float
    chi2: float | None
    p_value: float | None
    mismatch: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything a gate reads, and what the report shows."""

    finetuned: Summary
    baseline: Summary
    look: int  # grid look index (requests // look_every)
    success: Interval | None
    fallback: Interval | None
    error: Interval | None
    cost_over_budget: Interval | None  # finetuned - budget * baseline, per request
    p95_finetuned: Interval | None  # order-statistic bounds of each p95 at this look
    p95_baseline: Interval | None
    sample: SampleSize
    srm: Srm
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


# -- sequential core (vectorised) ----------------------------------------------------------


def mixture_half_width(var: Any, tau2: float, alpha: float) -> Any:
    """Half-width of the normal-mixture always-valid confidence sequence for a mean difference
    whose estimate has variance ``var`` (Johari et al.: reject H0 when the mixture likelihood
    ratio reaches 1/alpha; inverting it gives this radius)."""
    v = np.maximum(np.asarray(var, float), 1e-18)
    return np.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + np.log((v + tau2) / v)))


def mixture_p_value(diff: Any, var: Any, tau2: float) -> Any:
    """1 / (mixture likelihood ratio) for H0: difference 0, capped at 1."""
    v = np.maximum(np.asarray(var, float), 1e-18)
    log_lr = 0.5 * np.log(v / (v + tau2)) + tau2 * np.square(diff) / (2.0 * v * (v + tau2))
    return np.minimum(1.0, np.exp(-log_lr))


def proportion_difference(
    x_f: Any, n_f: Any, x_b: Any, n_b: Any, tau: float, alpha: float
) -> tuple[Any, Any, Any]:
    """(estimate, low, high) of ``p_f - p_b``; the variance uses (x+1)/(n+2) so that 0 or n
    successes never give a zero variance. Works on arrays of counts (simulations)."""
    n_f, n_b = np.maximum(n_f, 1), np.maximum(n_b, 1)
    diff = np.asarray(x_f) / n_f - np.asarray(x_b) / n_b
    pf, pb = (np.asarray(x_f) + 1.0) / (n_f + 2.0), (np.asarray(x_b) + 1.0) / (n_b + 2.0)
    var = pf * (1 - pf) / n_f + pb * (1 - pb) / n_b
    radius = mixture_half_width(var, tau * tau, alpha)
    return diff, diff - radius, diff + radius


def look_alpha(alpha: float, look: int) -> float:
    """Error spent at look ``k`` >= 1: sums to ``alpha`` over infinitely many looks."""
    return alpha * 6.0 / (math.pi**2 * max(look, 1) ** 2)


def quantile_bounds(values: FloatArray, q: float, alpha: float) -> tuple[float, float] | None:
    """Distribution-free bounds (low, high) of the ``q`` quantile, each one-sided at
    ``alpha``: order statistics whose ranks come from Binomial(n, q). None when n is too
    small for the bound to exist."""
    n = values.size
    lo_rank = int(_scipy_stats().binom.ppf(alpha, n, q))  # P(Bin < lo_rank) <= alpha
    hi_rank = int(_scipy_stats().binom.ppf(1.0 - alpha, n, q)) + 1
    if lo_rank < 1 or hi_rank > n:
        return None
    ordered = np.sort(values)
    return float(ordered[lo_rank - 1]), float(ordered[hi_rank - 1])


# -- summaries and the comparison ------------------------------------------------------


def summarize(arm: Arm) -> Summary:
    n = arm.n
    if n == 0:
        return Summary(0, None, None, None, None, None, None, None, None, None, 0, None)
    lat = np.percentile(arm.latency_ms, [50, 95, 99])
    successes = int(arm.success.sum())
    return Summary(
        n=n,
        success_rate=successes / n,
        success_ci=wilson(successes, n),
        error_rate=float(arm.error.mean()),
        fallback_rate=float(arm.fallback.mean()),
        abstention_rate=float(arm.abstained.mean()),
        latency_p50_ms=float(lat[0]),
        latency_p95_ms=float(lat[1]),
        latency_p99_ms=float(lat[2]),
        cost_per_request_usd=float(arm.cost_usd.mean()),
        feedback_n=int(arm.feedback.size),
        feedback_mean=float(arm.feedback.mean()) if arm.feedback.size else None,
    )


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    z = float(_scipy_stats().norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def srm_check(n_f: int, n_b: int, share: float, threshold_p: float) -> Srm:
    """Chi-square of the observed split against ``share`` on the fine-tuned side."""
    total = n_f + n_b
    if total == 0 or share <= 0 or share >= 1:
        # All-or-nothing splits: any unit on the wrong side is a mismatch by itself.
        broken = (share <= 0 and n_f > 0) or (share >= 1 and n_b > 0)
        return Srm((n_f, n_b), share, None, 0.0 if broken else None, broken)
    chi2, p = _scipy_stats().chisquare([n_f, n_b], [total * share, total * (1 - share)])
    return Srm((n_f, n_b), share, float(chi2), float(p), bool(p < threshold_p))


def compare(
    finetuned: Arm,
    baseline: Arm,
    *,
    share: float,
    alpha: float = 0.05,
    mde: float = 0.05,
    power: float = 0.8,
    cost_budget_ratio: float = 1.5,
    srm_p: float = 0.001,
    look_every: int = 100,
) -> Comparison:
    """Compare the variants. Summaries, sample sizes and the sample-ratio check use every
    request; the sequential tests use the latest look (the first ``k * look_every``)."""
    f, b, look = _at_look(finetuned, baseline, look_every)
    a = alpha / METRICS
    enough = min(f.n, b.n) >= MIN_TEST_N
    return Comparison(
        finetuned=summarize(finetuned),
        baseline=summarize(baseline),
        look=look,
        success=_rate(f.success, b.success, mde, a) if enough else None,
        fallback=_rate(f.fallback, b.fallback, mde, a) if enough else None,
        error=_rate(f.error, b.error, mde, a) if enough else None,
        cost_over_budget=_cost(f, b, cost_budget_ratio, a) if enough else None,
        p95_finetuned=_p95(f.latency_ms, look, a / 2),
        p95_baseline=_p95(b.latency_ms, look, a / 2),
        sample=sample_size(finetuned, baseline, share, mde, power, a),
        srm=srm_check(finetuned.n, baseline.n, share, srm_p),
        alpha=alpha,
    )


def _at_look(f: Arm, b: Arm, look_every: int) -> tuple[Arm, Arm, int]:
    """Keep the first ``k * look_every`` requests of the merged timeline: a test run at any
    moment sees exactly what it saw at the last grid point, so looks are countable."""
    total = f.n + b.n
    look = total // look_every
    if look * look_every == total:
        return f, b, look
    cut = np.sort(np.concatenate([f.ts, b.ts]))[look * look_every - 1] if look else -np.inf
    return f.head(int((f.ts <= cut).sum())), b.head(int((b.ts <= cut).sum())), look


def _rate(f: BoolArray, b: BoolArray, mde: float, alpha: float) -> Interval:
    est, low, high = proportion_difference(f.sum(), f.size, b.sum(), b.size, mde, alpha)
    return Interval(float(est), float(low), float(high), alpha)


def _cost(f: Arm, b: Arm, ratio: float, alpha: float) -> Interval:
    """Always-valid interval of ``mean_f - ratio * mean_b``; above 0: over the budget."""
    diff = f.cost_usd.mean() - ratio * b.cost_usd.mean()
    var = f.cost_usd.var(ddof=1) / f.n + ratio**2 * b.cost_usd.var(ddof=1) / b.n
    scale = max(float(b.cost_usd.mean()), float(f.cost_usd.mean()), 1e-12)
    if var <= 0:  # constant costs (e.g. both free): the difference is known exactly
        return Interval(float(diff), float(diff), float(diff), alpha)
    radius = float(mixture_half_width(var, (0.5 * scale) ** 2, alpha))
    return Interval(float(diff), float(diff - radius), float(diff + radius), alpha)


def _p95(latency: FloatArray, look: int, alpha: float) -> Interval | None:
    if latency.size < MIN_TEST_N:
        return None
    bounds = quantile_bounds(latency, 0.95, look_alpha(alpha, look))
    if bounds is None:
        return None
    return Interval(float(np.percentile(latency, 95)), bounds[0], bounds[1], alpha)


def sample_size(f: Arm, b: Arm, share: float, mde: float, power: float, alpha: float) -> SampleSize:
    """Requests per variant (the smaller one) needed to detect ``mde`` in the success rate:
    sequentially (the always-valid radius plus ``z_power`` standard errors fits in ``mde``)
    and with one fixed-horizon look, for reference."""
    p = float(b.success.mean()) if b.n else 0.5
    p = min(max(p, 0.01), 0.99 - mde) if p + mde < 1 else max(p - mde, 0.01)
    small = min(share, 1 - share) if 0 < share < 1 else 0.5
    # n_small * var(difference), the larger side holding n_small * (1 - small) / small.
    var_unit = p * (1 - p) + (p + mde) * (1 - p - mde) * small / (1 - small)
    z_power = float(_scipy_stats().norm.ppf(power))
    fixed = (float(_scipy_stats().norm.ppf(1 - alpha / 2)) + z_power) ** 2 * var_unit / mde**2

    def fits(n_small: float) -> bool:
        var = var_unit / n_small
        return bool(mixture_half_width(var, mde * mde, alpha) + z_power * math.sqrt(var) <= mde)

    low, high = 1.0, 1e9
    while high - low > 1:
        mid = (low + high) / 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return SampleSize(min(f.n, b.n), math.ceil(high), math.ceil(fixed))


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _round(value)


def _scipy_stats() -> ModuleType:
    # Imported on first use: scipy.stats costs ~1-2 s of start-up that `genesis ask` and
    # the server's request path never need.
    from scipy import stats

    module: ModuleType = stats
    return module
