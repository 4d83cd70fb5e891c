"""Statistics for few, paired seeds: BCa bootstrap intervals, the Wilcoxon signed-rank test, Holm's
correction for a family of tests, and two one-sided tests (TOST) for equivalence within a margin.

Sweeps give a handful of seeds per setting, so nothing here assumes normality. Intervals are
scipy's bias-corrected and accelerated (BCa) bootstrap, which corrects the plain percentile
interval for the skew of small samples. Below :data:`MIN_PAIRS` values no interval and no p-value
is given at all: a bootstrap of so few values covers far less than it claims, and Wilcoxon's
smallest two-sided p with 5 pairs is 0.0625, so no test could reach :data:`ALPHA`. For a test the
count is of non-zero differences, since Wilcoxon drops the zeros: 20 pairs of which 2 differ are a
test on 2. Every estimate draws its resamples from its own generator seeded by the caller, and the
p-values are exact counts, so a report is reproducible number for number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

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


#: Up to this many non-zero differences the p-value is exact; above, the normal approximation is
#: within rounding of it and the exact distribution's size (about n^2 / 2 values) grows past use.
EXACT_MAX = 200
#: How the report's Wilcoxon tests are computed, in words (the report prints it).
WILCOXON_METHOD = (
    "Wilcoxon signed-rank test with zero differences dropped (scipy's zero_method='wilcox', Wilcoxon's own "
    "rule) and tied differences given their mid-ranks; its p-value is exact: the null distribution of the "
    "signed-rank sum is counted over all 2^n sign patterns of the n non-zero differences, ties and all (what "
    "scipy's exhaustive PermutationMethod computes), so it needs no continuity correction "
    f"(above {EXACT_MAX} non-zero pairs: scipy's normal approximation with tie and continuity correction)"
)
Alternative = Literal["two-sided", "less", "greater"]


def nonzero(differences: Sequence[float]) -> int:
    """How many differences carry information for Wilcoxon: the finite, non-zero ones."""
    return len(_signed(differences))


def wilcoxon_p(differences: Sequence[float], alternative: Alternative = "two-sided") -> float:
    """Wilcoxon signed-rank p-value of paired differences (:data:`WILCOXON_METHOD`).

    ``less``: the differences lie below zero; ``greater``: above. NaN below :data:`MIN_PAIRS`
    non-zero differences (no test: zeros are dropped, so they are no evidence either way).
    """
    d = _signed(differences)
    if len(d) < MIN_PAIRS:
        return math.nan
    if len(d) > EXACT_MAX:
        from scipy.stats import wilcoxon

        return float(wilcoxon(d, correction=True, alternative=alternative, method="asymptotic").pvalue)
    from scipy.stats import rankdata

    doubled = np.rint(2 * rankdata(np.abs(d))).astype(int)  # mid-ranks are halves: doubled, integers
    observed = int(doubled[d > 0].sum())
    null = np.ones(1)  # the distribution of the doubled signed-rank sum, one difference at a time
    for r in doubled:
        both = np.zeros(len(null) + r)
        both[: len(null)] += null
        both[r:] += null
        null = both / 2
    at_most, at_least = float(null[: observed + 1].sum()), float(null[observed:].sum())
    if alternative == "less":
        return min(1.0, at_most)
    if alternative == "greater":
        return min(1.0, at_least)
    return min(1.0, 2 * min(at_most, at_least))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests, in the given order.

    The k-th smallest of m p-values is multiplied by m - k + 1, then each is raised to the largest
    adjusted value before it (so the order is kept) and capped at 1. NaN entries (no test) stay
    NaN and do not count in m. Holm controls the family-wise error rate like Bonferroni, with more
    power, and needs no assumption on how the tests depend on each other (they share EarlyBird).
    """
    x = np.asarray(p, dtype=float)
    out = np.full(x.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(x))
    m = len(tested)
    if m == 0:
        return out
    order = tested[np.argsort(x[tested], kind="stable")]
    scaled = (m - np.arange(m)) * x[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def tost(differences: Sequence[float], margin: float) -> tuple[float, float]:
    """The two one-sided tests of equivalence within ``±margin``: ``(p_lower, p_upper)``.

    ``p_lower`` tests H0: the differences sit at or below ``-margin`` (Wilcoxon, ``greater``, on
    ``d + margin``); ``p_upper`` tests H0: at or above ``+margin`` (``less`` on ``d - margin``).
    Wilcoxon rather than t keeps the test the difference column uses, and with it no assumption of
    normality; it locates the differences' centre of symmetry (their pseudo-median), which is the
    mean when they are symmetric. Each is NaN below :data:`MIN_PAIRS` differences off the margin.
    """
    d = _finite(differences)
    return wilcoxon_p(d + margin, "greater"), wilcoxon_p(d - margin, "less")


def equivalence(differences: Sequence[float], margin: float, p_diff: float, shown: str = "") -> str:
    """The verdict of TOST at ``±margin`` (``shown``: the margin as the reader reads it, "1 pp").

    "equivalent within ±m": both one-sided tests reject; "worse": significantly below ``-margin``
    (Wilcoxon ``less`` on ``d + margin``), "better": above ``+margin``; else "undecided". A row is
    called worse or better only when its difference test (``p_diff``, the Holm-adjusted p of the
    same row) rejects as well, so the two columns of a table never contradict each other.
    """
    d = _finite(differences)
    if len(d) < MIN_PAIRS:
        return f"no verdict: too few pairs (n={len(d)} < {MIN_PAIRS})"
    off = min(nonzero(d + margin), nonzero(d - margin))
    if off < MIN_PAIRS:
        return f"no verdict: too few pairs off the margin (n={off} < {MIN_PAIRS})"
    if np.max(tost(d, margin)) < ALPHA:
        return f"equivalent within ±{shown or f'{margin:g}'}"
    different = math.isfinite(p_diff) and p_diff < ALPHA
    if different and wilcoxon_p(d + margin, "less") < ALPHA:
        return "worse"
    if different and wilcoxon_p(d - margin, "greater") < ALPHA:
        return "better"
    return "undecided"


def verdict(n_pairs: int, differences: Sequence[float], p: float) -> str:
    """One phrase for a paired comparison, the words a reader looks for (``p``: the p the verdict
    rests on, Holm-adjusted within its family)."""
    if n_pairs == 0:
        return "no pairs"
    if n_pairs < MIN_PAIRS:
        return f"too few pairs (n={n_pairs} < {MIN_PAIRS}): per-seed values shown"
    if not np.any(_finite(differences)):
        return "the same on every pair"
    if (k := nonzero(differences)) < MIN_PAIRS:
        return f"too few non-zero pairs (n={k} < {MIN_PAIRS})"
    return "significant" if p < ALPHA else "not significant"


def _signed(values: Sequence[float]) -> np.ndarray:
    """The finite, non-zero differences, rounded to 10 digits of the largest one: a difference of
    two accuracies, or one shifted by a margin, carries float noise (``0.8 - 0.79 - 0.01`` is not
    0), which would break true ties and turn true zeros into tiny signed values."""
    x = _finite(values)
    scale = float(np.max(np.abs(x))) if len(x) else 0.0
    if scale == 0:
        return x[:0]
    x = np.round(x / scale, 10)
    return x[x != 0]


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]
