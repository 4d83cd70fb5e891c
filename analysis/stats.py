"""Statistics for few, paired seeds: percentile bootstrap intervals and the Wilcoxon signed-rank test.

Sweeps give a handful of seeds per setting, so nothing here assumes normality. Every estimate
draws its resamples from its own generator seeded by the caller, so a report is reproducible
number for number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
ALPHA = 0.05
N_BOOT = 10_000


@dataclass(frozen=True)
class Estimate:
    """A mean (or ratio) with its 95% interval; the interval is NaN when it rests on fewer than 2 values."""

    value: float
    lo: float
    hi: float
    n: int


def bootstrap_mean(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean and percentile bootstrap interval of the mean."""
    x = _finite(values)
    if len(x) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    if len(x) == 1:
        return Estimate(float(x[0]), math.nan, math.nan, 1)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(x[idx].mean(axis=1), [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return Estimate(float(x.mean()), float(lo), float(hi), len(x))


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """``mean(a) / mean(b)`` over pairs ``(a_i, b_i)``, with an interval from resampling whole pairs.

    Used for speed-ups: EarlyBird's search cost over WORM's, so 1.25 means WORM's search is 1.25x
    faster on average.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) == 0 or y.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, len(x))
    value = float(x.mean() / y.mean())
    if len(x) == 1:
        return Estimate(value, math.nan, math.nan, 1)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = x[idx].mean(axis=1) / y[idx].mean(axis=1)
    lo, hi = np.percentile(ratios[np.isfinite(ratios)], [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return Estimate(value, float(lo), float(hi), len(x))


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences.

    NaN with fewer than 2 pairs (no test); 1.0 when every difference is zero (no evidence of
    any). Zero differences are dropped (Wilcoxon's own rule); scipy picks the exact null
    distribution for small samples without ties.
    """
    from scipy.stats import wilcoxon

    d = _finite(differences)
    if len(d) < 2:
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
    if n_pairs < 2:
        return "too few pairs"
    if not np.any(_finite(differences)):
        return "no difference"
    return "significant" if p < ALPHA else "not significant"


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]
