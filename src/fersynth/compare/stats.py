"""Is an accuracy difference between two trained models real? Inference for a crossed seeds x images design.

Two experiments (baseline, candidate) are each trained under S seeds and tested on the same N images. The
difference ``d[s, i] = candidate_s correct on i - baseline_s correct on i`` varies for two reasons a reviewer
cares about: which models training happened to produce (initialisation, data order, augmentation: the seed)
and which test images happened to be drawn. A verdict that resamples only images treats one training run as
the truth, and one that looks only at per-seed means ignores that the test set is a sample. Here both are
random effects of a two-way crossed design without replication (seed x image), and the variance of the
mean difference is estimated from the ANOVA mean squares:

    Var(mean) = sigma2_seed / S + sigma2_image / N + sigma2_residual / (S N)

(components truncated at zero) and a Student t interval and test with Satterthwaite's degrees of freedom for
that combination of mean squares. (Until 2026-12 the degrees of freedom were S - 1 whenever the seed
component was positive: with 5 seeds that is df 4 in 77% of 5-seed subsets, an MDE of 8.1 x se instead of
~4.1 x se, and the same 40 models gave MDEs from 10.7 to 47 points; Satterthwaite's rule kept the A/A
false-verdict rate at the nominal level on the demo and raised the detection of a planted gain: the figures are
in metrics/bench/power.json, quoted in docs/statistics.md.)

With one seed the training variance cannot be estimated: no verdict is given. Holm's step-down procedure
corrects a family of such tests, and the minimum detectable effect says how large a difference the design
could have found (two-sided, at the family's strictest level, with the given power, from the noncentral
t), so "no significant difference" reads as "inconclusive (detects +-X pts)": the design, not a bound on
the true difference.

``benchmarks/bench_power.py`` measures the rate of "helps"/"hurts" on A/A comparisons (same training data,
different seeds) on the demo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats
from scipy.optimize import brentq


@dataclass(frozen=True)
class Difference:
    """The mean paired difference of a crossed seeds x images design, with its uncertainty."""

    difference: float
    se: float
    df: float
    low: float  # 95% interval (unadjusted for multiplicity)
    high: float
    p_value: float  # two-sided, unadjusted
    seeds: int
    images: int
    seed_share: float  # share of the variance of the mean that comes from training (seeds), not test images
    seed_variance: float  # the variance components (method of moments, truncated at zero): between seed pairs,
    image_variance: float  # between test images,
    residual_variance: float  # and seed x image

    def to_dict(self, digits: int = 4) -> dict:
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def crossed_difference(differences: np.ndarray, confidence: float = 0.95) -> Difference:
    """``differences``: S x N array (seed pair x image) of candidate minus baseline scores (e.g. 0/1
    correctness, so values in {-1, 0, 1}). Needs S >= 2 and N >= 2."""
    d = np.asarray(differences, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"differences must be seeds x images, got shape {d.shape}")
    s, n = d.shape
    if s < 2 or n < 2:
        raise ValueError(f"a crossed design needs at least 2 seeds and 2 images, got {s} x {n}")
    mean = float(d.mean())
    seed_means, image_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * float(np.sum((seed_means - mean) ** 2)) / (s - 1)
    ms_image = s * float(np.sum((image_means - mean) ** 2)) / (n - 1)
    residual = d - seed_means[:, None] - image_means[None, :] + mean
    ms_residual = float(np.sum(residual**2)) / ((s - 1) * (n - 1))
    # variance components (method of moments), truncated at zero; Var(mean) = (a MS_s + b MS_i + c MS_e) / (S N)
    a = 1.0 if ms_seed > ms_residual else 0.0
    b = 1.0 if ms_image > ms_residual else 0.0
    c = 1.0 - a - b
    combination = a * ms_seed + b * ms_image + c * ms_residual
    variance = max(combination, 0.0) / (s * n)
    se = float(np.sqrt(variance))
    df = satterthwaite_df(ms_seed, ms_image, ms_residual, a, b, c, s, n)
    components = {
        "seed_variance": max(ms_seed - ms_residual, 0.0) / n,
        "image_variance": max(ms_image - ms_residual, 0.0) / s,
        "residual_variance": ms_residual,
    }
    seed_share = float(components["seed_variance"] / s / variance) if variance > 0 else 0.0
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        low = high = mean
    else:
        p = float(2 * scipy_stats.t.sf(abs(mean) / se, df))
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df) * se)
        low, high = mean - half, mean + half
    return Difference(mean, se, df, low, high, p, s, n, seed_share, **components)


def satterthwaite_df(ms_seed, ms_image, ms_residual, a, b, c, s, n) -> float:
    """Satterthwaite's degrees of freedom of ``(a MS_seed + b MS_image + c MS_residual)``."""
    combination = a * ms_seed + b * ms_image + c * ms_residual
    terms = (a * ms_seed) ** 2 / (s - 1) + (b * ms_image) ** 2 / (n - 1) + (c * ms_residual) ** 2 / ((s - 1) * (n - 1))
    return max(float(combination**2 / terms), 1.0) if terms > 0 else float(s - 1)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error rate), in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def minimum_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided t test at ``alpha`` detects with probability ``power``
    (exact: the noncentral t, not the normal shortcut, which overstates power at few degrees of freedom)."""
    if se == 0:
        return 0.0
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)

    def shortfall(shift: float) -> float:
        far_tail = float(np.nan_to_num(scipy_stats.nct.cdf(-critical, df, shift)))  # ~0 for shift > 0
        return float(scipy_stats.nct.sf(critical, df, shift)) + far_tail - power

    upper = critical + scipy_stats.norm.ppf(power) + 1
    while shortfall(upper) < 0:
        upper *= 2
    return float(brentq(shortfall, 0.0, upper) * se)


def verdict(difference: float, p_adjusted: float, mde: float, alpha: float = 0.05) -> str:
    """``helps`` / ``hurts``, or ``inconclusive (detects +-X pts)``: not shown either way, and X (the minimum
    detectable effect) is what this design could have shown; it is not a bound on the true difference."""
    if p_adjusted < alpha:
        return "helps" if difference > 0 else "hurts"
    return f"inconclusive (detects +-{100 * mde:.1f} pts)"


def planned_se_df(result: Difference, seeds: int) -> tuple[float, float]:
    """The standard error and degrees of freedom the same test images would give with ``seeds`` seed pairs,
    from ``result``'s variance components (their expected mean squares, Satterthwaite's df)."""
    n = result.images
    seed_var, image_var, residual = result.seed_variance, result.image_variance, result.residual_variance
    ms_seed, ms_image = residual + n * seed_var, residual + seeds * image_var
    a, b = float(seed_var > 0), float(image_var > 0)
    variance = seed_var / seeds + image_var / n + residual / (seeds * n)
    return float(np.sqrt(variance)), satterthwaite_df(ms_seed, ms_image, residual, a, b, 1 - a - b, seeds, n)


def seeds_needed(
    result: Difference, effect: float, alpha: float = 0.05, power: float = 0.8, most: int = 1000
) -> int | None:
    """The fewest seed pairs (>= 2) with which the same test images detect a true difference of ``effect``
    (a share: 0.05 is 5 points) with probability ``power`` at level ``alpha``; ``None`` when even ``most``
    seeds cannot: the test images' own variance is then the limit, and only more test images help."""
    effect = abs(effect)
    if minimum_detectable_effect(*planned_se_df(result, most), alpha, power) > effect:
        return None
    low, high = 2, most  # MDE falls as seeds grow: bisect for the first count that reaches ``effect``
    if minimum_detectable_effect(*planned_se_df(result, low), alpha, power) <= effect:
        return low
    while high - low > 1:
        middle = (low + high) // 2
        if minimum_detectable_effect(*planned_se_df(result, middle), alpha, power) <= effect:
            high = middle
        else:
            low = middle
    return high
