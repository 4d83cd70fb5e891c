"""Statistics for few, paired seeds: BCa bootstrap intervals and the Wilcoxon signed-rank test.

Sweeps give a handful of seeds per setting, so nothing here assumes normality. Intervals are
scipy's bias-corrected and accelerated (BCa) bootstrap, which corrects the plain percentile
interval for the skew of small samples. Below :data:`MIN_PAIRS` values no interval and no p-value
is given at all: a bootstrap of so few values covers far less than it claims, and Wilcoxon's
smallest two-sided p with 5 pairs is 0.0625, so no test could reach :data:`ALPHA`. Every estimate
draws its resamples from its own generator seeded by the caller, so a report is reproducible
number for number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
ALPHA = 0.05
N_BOOT = 10_000
#: The fewest values (pairs, for a paired comparison) an interval or a test is given for.
MIN_PAIRS = 6


@dataclass(frozen=True)
class Estimate:
    """A mean (or ratio) with its 95% interval; the interval is NaN below :data:`MIN_PAIRS` values."""

    value: float
    lo: float
    hi: float
    n: int


def bootstrap_mean(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean and BCa bootstrap interval of the mean (NaN values are ignored)."""
    x = _finite(values)
    if len(x) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(x.mean())
    return Estimate(value, *_bca((x,), np.mean, value, n_boot, seed), len(x))


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """``mean(a) / mean(b)`` over pairs ``(a_i, b_i)``, with a BCa interval from resampling whole pairs.

    Used for speed-ups: EarlyBird's search cost over WORM's, so 1.25 means WORM's search is 1.25x
    faster on average. A pair with a NaN on either side is dropped.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) == 0 or y.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, len(x))
    value = float(x.mean() / y.mean())
    return Estimate(value, *_bca((x, y), _ratio_of_means, value, n_boot, seed), len(x))


def _ratio_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of zero costs: inf, which BCa ranks last
        return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def _bca(
    data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], value: float, n_boot: int, seed: int
) -> tuple[float, float]:
    """The BCa interval of ``statistic`` (vectorised over ``axis``) on ``data``, resampled as pairs
    when there are two samples; NaN below :data:`MIN_PAIRS` values.

    Degenerate data (every value, or every pair, the same) has no spread to resample: scipy warns
    and returns NaN there, and the interval is the value itself.
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    if len(data[0]) < MIN_PAIRS:
        return math.nan, math.nan
    if all(np.all(x == x[0]) for x in data):
        return value, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # the NaN acceleration of a constant jackknife
        result = bootstrap(
            data,
            statistic,
            n_resamples=n_boot,
            paired=len(data) > 1,
            vectorized=True,
            method="BCa",
            confidence_level=LEVEL,
            random_state=np.random.default_rng(seed),
        )
    lo, hi = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    spread = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
    if spread.size and np.ptp(spread) <= 1e-12 * max(1.0, abs(value)):  # e.g. a_i = c * b_i: every ratio is c
        return value, value
    return math.nan, math.nan


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences.

    NaN below :data:`MIN_PAIRS` pairs (no test); 1.0 when every difference is zero (no evidence of
    any). Zero differences are dropped (Wilcoxon's own rule); scipy picks the exact null
    distribution for small samples without ties.
    """
    from scipy.stats import wilcoxon

    d = _finite(differences)
    if len(d) < MIN_PAIRS:
        return math.nan
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on samples too small for its normal approximation
        return float(wilcoxon(d).pvalue)


def verdict(n_pairs: int, differences: Sequence[float], p: float) -> str:
    """One phrase for a paired comparison, the words a reader looks for."""
    if n_pairs == 0:
        return "no pairs"
    if n_pairs < MIN_PAIRS:
        return f"too few pairs (n={n_pairs} < {MIN_PAIRS}): per-seed values shown"
    if not np.any(_finite(differences)):
        return "no difference"
    return "significant" if p < ALPHA else "not significant"


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]
