"""The statistics on known answers: BCa intervals equal to scipy's own, degenerate and tiny samples,
NaN handling, reproducibility, Wilcoxon's exact p-values with ties and zeros, Holm's correction and
the TOST verdicts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sp

from analysis import stats

#: Right-skewed, as search costs and epochs to target are: where BCa and the percentile interval part.
SKEWED = np.array([1.0, 1, 1, 2, 2, 3, 5, 9, 20, 60])


def scipy_interval(data: tuple[np.ndarray, ...], method: str = "BCa", n_boot: int = 2000, seed: int = 0) -> tuple:
    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(a, axis=axis) / np.mean(b, axis=axis)

    result = sp.bootstrap(
        data,
        np.mean if len(data) == 1 else ratio,
        n_resamples=n_boot,
        paired=len(data) > 1,
        vectorized=True,
        method=method,
        confidence_level=0.95,
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def test_the_interval_of_the_mean_is_scipys_bca_not_the_percentile_one() -> None:
    est = stats.bootstrap_mean(SKEWED, n_boot=2000, seed=7)
    assert (est.value, est.n) == (pytest.approx(10.4), 10)
    assert (est.lo, est.hi) == scipy_interval((SKEWED,), seed=7)
    percentile = scipy_interval((SKEWED,), "percentile", seed=7)
    assert est.lo > percentile[0] and est.hi > percentile[1]  # BCa leans the way the data is skewed


def test_the_ratio_interval_is_scipys_paired_bca() -> None:
    eb, worm = SKEWED + 5, np.array([6.0, 5, 7, 6, 8, 6, 9, 10, 18, 40])
    est = stats.bootstrap_ratio(eb, worm, n_boot=2000, seed=3)
    assert est.value == pytest.approx(eb.mean() / worm.mean()) and est.n == 10
    assert (est.lo, est.hi) == scipy_interval((eb, worm), seed=3)
    assert (est.lo, est.hi) != scipy_interval((eb, worm), "percentile", seed=3)


def test_the_same_seed_gives_the_same_numbers() -> None:
    x = np.random.default_rng(1).exponential(3.0, 12)
    assert stats.bootstrap_mean(x, seed=5) == stats.bootstrap_mean(x, seed=5)
    assert stats.bootstrap_mean(x, seed=5) != stats.bootstrap_mean(x, seed=6)
    assert stats.bootstrap_ratio(x, x[::-1], seed=5) == stats.bootstrap_ratio(x, x[::-1], seed=5)


def test_the_interval_matches_the_normal_theory_on_a_large_sample() -> None:
    x = np.random.default_rng(1).normal(10.0, 2.0, 400)
    est = stats.bootstrap_mean(x, seed=3)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert est.lo < est.value < est.hi
    assert (est.hi - est.lo) / 2 == pytest.approx(half, rel=0.1)


def test_degenerate_data_has_the_value_as_its_interval_and_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's DegenerateDataWarning and RuntimeWarning must not leak
        for value in (7.0, 0.1, 1 / 3):
            est = stats.bootstrap_mean([value] * 8)
            assert est.lo == est.value == est.hi and est.value == pytest.approx(value) and est.n == 8
        const = stats.bootstrap_ratio([6.0] * 8, [4.0] * 8)
        assert (const.value, const.lo, const.hi) == (1.5, 1.5, 1.5)
        b = np.arange(1.0, 9.0)  # a_i = 3 b_i: every resample's ratio is 3, up to rounding
        est = stats.bootstrap_ratio(3 * b, b)
        assert est.lo == pytest.approx(3) and est.hi == pytest.approx(3) and est.value == pytest.approx(3)


@pytest.mark.parametrize("n", [1, 2, stats.MIN_PAIRS - 1])
def test_fewer_than_min_pairs_values_get_a_value_but_no_interval(n: int) -> None:
    x = SKEWED[:n]
    est = stats.bootstrap_mean(x)
    assert est.value == pytest.approx(x.mean()) and est.n == n and math.isnan(est.lo) and math.isnan(est.hi)
    ratio = stats.bootstrap_ratio(x + 1, x)
    assert ratio.value == pytest.approx((x + 1).mean() / x.mean()) and math.isnan(ratio.lo) and ratio.n == n
    assert math.isnan(stats.wilcoxon_p(x))


def test_nan_values_are_dropped_and_nothing_is_nothing() -> None:
    with_nan = [*SKEWED, math.nan, math.inf]
    assert stats.bootstrap_mean(with_nan, seed=2) == stats.bootstrap_mean(SKEWED, seed=2)
    assert stats.bootstrap_mean([]).n == 0 and math.isnan(stats.bootstrap_mean([math.nan]).value)
    a, b = [*SKEWED, math.nan, 4.0], [*(SKEWED + 1), 3.0, math.nan]  # a pair with a NaN side is dropped whole
    assert stats.bootstrap_ratio(a, b, seed=2) == stats.bootstrap_ratio(SKEWED, SKEWED + 1, seed=2)
    assert math.isnan(stats.bootstrap_ratio([1.0], [0.0]).value)


def test_wilcoxon_exact_p_values_from_min_pairs_on() -> None:
    # Every difference negative, distinct magnitudes: the exact two-sided p is 2 / 2^n.
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5, -6]) == pytest.approx(2 / 2**6)
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5, -6, -7]) == pytest.approx(2 / 2**7)
    assert math.isnan(stats.wilcoxon_p([0] * 6))  # zeros are dropped: no non-zero pair, no test
    assert math.isnan(stats.wilcoxon_p([-1, -2, -3, -4, -5]))  # could never reach 0.05 (its least p: 0.0625)
    assert math.isnan(stats.wilcoxon_p([-1, -2, -3, -4, -5, math.nan]))


def test_verdicts() -> None:
    assert stats.verdict(0, [], math.nan) == "no pairs"
    assert stats.verdict(3, [-1, -2, -3], math.nan) == "too few pairs (n=3 < 6): per-seed values shown"
    assert stats.verdict(6, [0] * 6, 1.0) == "the same on every pair"
    assert stats.verdict(6, [-1] * 6, 0.03) == "significant"
    assert stats.verdict(6, [-1, 1] * 3, 0.9) == "not significant"
    assert stats.verdict(8, [0, 0, 0, -1, -2, -3, -4, -5], math.nan) == "too few non-zero pairs (n=5 < 6)"


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_wilcoxon_is_exact_with_ties_and_zeros(alternative: str) -> None:
    """The exact null distribution with tied mid-ranks, checked against scipy's exhaustive permutation
    test (every one of the 2^n sign patterns, an independent implementation)."""
    rng = np.random.default_rng(4)
    for _ in range(4):
        d = np.round(rng.normal(0.4, 1.0, 10))  # integers: many ties, some zeros
        permuted = sp.wilcoxon(d, alternative=alternative, method=sp.PermutationMethod(n_resamples=2 ** len(d)))
        if stats.nonzero(d) >= stats.MIN_PAIRS:
            assert stats.wilcoxon_p(d, alternative) == pytest.approx(permuted.pvalue, rel=1e-12)
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5, -6], "less") == pytest.approx(1 / 2**6)
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5, -6], "greater") == 1.0
    assert stats.nonzero([0, 0, 1, -2, math.nan]) == 2


def test_float_noise_neither_breaks_ties_nor_makes_zeros() -> None:
    a, b = np.array([0.8, 0.71, 0.62, 0.53, 0.44, 0.35, 0.9]), np.array([0.79, 0.7, 0.61, 0.52, 0.43, 0.34, 0.9])
    d = b - a  # six differences of -0.01 up to float noise, and one 0
    assert len(set(d[:6])) > 1 and stats.nonzero(d) == 6
    assert stats.wilcoxon_p(d) == pytest.approx(2 / 2**6)  # all tied and negative: only one pattern as extreme
    assert stats.nonzero(d + 0.01) == 1  # the six shifted to zero, not to ±1e-17


def test_holm_on_the_digits_studys_four_p_values() -> None:
    # By hand: sorted 0.000873, 0.000879, 0.0145, 0.0167 times 4, 3, 2, 1 is 0.003492, 0.002637, 0.029, 0.0167;
    # each raised to the largest before it: 0.003492, 0.003492, 0.029, 0.029.
    adjusted = stats.holm([0.0167, 0.0145, 0.000879, math.nan, 0.000873])
    assert adjusted[:3] == pytest.approx([0.029, 0.029, 0.003492]) and adjusted[4] == pytest.approx(0.003492)
    assert math.isnan(adjusted[3])  # no test: not counted in the family of four
    assert stats.holm([0.039]) == pytest.approx([0.039])
    assert list(stats.holm([0.3, 0.6])) == [0.6, 0.6] and list(stats.holm([0.6, 0.9, 0.8])) == [1.0, 1.0, 1.0]
    assert math.isnan(stats.holm([math.nan])[0]) and len(stats.holm([])) == 0


def test_equivalence_verdicts() -> None:
    inside = [0.001, -0.002, 0.003, -0.004, 0.002, -0.001]
    assert stats.tost(inside, 0.01) == pytest.approx((1 / 64, 1 / 64))  # every d + m > 0 and every d - m < 0
    assert stats.equivalence(inside, 0.01, 0.9, shown="1 pp") == "equivalent within ±1 pp"
    above = [0.021, 0.022, 0.023, 0.024, 0.025, 0.026]
    assert stats.equivalence(above, 0.01, 0.03) == "better"
    assert stats.equivalence([-x for x in above], 0.01, 0.03) == "worse"
    assert stats.equivalence(above, 0.01, 0.2) == "undecided"  # the difference test does not reject: no call
    assert stats.equivalence([0.03, -0.03] * 3, 0.01, 0.9) == "undecided"
    assert stats.equivalence(inside[:5], 0.01, math.nan) == "no verdict: too few pairs (n=5 < 6)"
    on_margin = [0.01, 0.01, 0.01, -0.01, 0.002, 0.003]
    assert stats.equivalence(on_margin, 0.01, 0.9) == "no verdict: too few pairs off the margin (n=3 < 6)"
