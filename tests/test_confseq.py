"""The betting confidence sequence: the authors' own numbers, its guarantees, and coverage under peeking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.peeking import BATCH, CAP, FIRST, HI, LO, Distribution, distributions, simulate
from worm_tune.confseq import anytime_interval, betting_cs

REFERENCE = json.loads((Path(__file__).parent / "data" / "confseq" / "reference.json").read_text())
CASES = REFERENCE["cases"]
# One-sided normal quantile for the Wilson bounds: a 1-in-1000 chance that a bound is on the wrong side.
Z = 3.09


def _case_id(case: dict) -> str:
    return f"{case['name']}-{'intersected' if case['running_intersection'] else 'raw'}"


def _wilson(successes: float, n: int) -> tuple[float, float]:
    """Wilson score bounds on a binomial proportion, each one-sided at level Z."""
    p = successes / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_the_authors_implementation(case: dict) -> None:
    lower, upper = betting_cs(
        case["x"],
        0.0,
        1.0,
        alpha=REFERENCE["alpha"],
        breaks=REFERENCE["breaks"],
        running_intersection=case["running_intersection"],
    )
    # Both are grid points reached by the same float operations: equal, not just close.
    np.testing.assert_array_equal(lower, case["lower"])
    np.testing.assert_array_equal(upper, case["upper"])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_works_in_the_data_units(case: dict) -> None:
    x = LO + (HI - LO) * np.asarray(case["x"])
    lower, upper = betting_cs(x, LO, HI, running_intersection=case["running_intersection"])
    np.testing.assert_allclose(lower, LO + (HI - LO) * np.asarray(case["lower"]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(upper, LO + (HI - LO) * np.asarray(case["upper"]), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("x", "lo", "hi", "message"),
    [
        ([0.0, 11.5, 3.0], -11, 11, r"1 value\(s\) outside \[-11, 11\], e.g. 11.5"),
        ([0.0, float("nan")], -11, 11, r"outside \[-11, 11\], e.g. nan"),
        ([1.0, 2.0], 3, 3, "needs lo < hi"),
        ([[0.5]], 0, 1, "1-d sequence"),
    ],
)
def test_refuses_what_it_cannot_bound(x: list, lo: float, hi: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        betting_cs(x, lo, hi)


def test_bounds_are_ordered_inside_the_range_and_the_intersection_nests() -> None:
    x = np.random.default_rng(3).integers(-4, 3, size=60).astype(float)
    raw_lower, raw_upper = betting_cs(x, LO, HI, running_intersection=False)
    lower, upper = betting_cs(x, LO, HI)
    assert np.all((raw_lower >= LO) & (raw_lower <= raw_upper) & (raw_upper <= HI))
    assert np.all(np.diff(lower) >= 0) and np.all(np.diff(upper) <= 0)
    assert np.all((raw_lower <= lower) & (upper <= raw_upper))
    assert np.any(raw_lower < lower) or np.any(upper < raw_upper)  # the intersection did something
    assert anytime_interval(x, LO, HI) == (lower[-1], upper[-1])


def test_is_symmetric_under_reflection() -> None:
    """x -> 1 - x swaps the positive and the negative bettor, so the CS reflects too (up to grid rounding)."""
    x = np.random.default_rng(0).beta(2, 5, size=60)
    lower, upper = betting_cs(x, 0, 1, running_intersection=False)
    mirrored_lower, mirrored_upper = betting_cs(1 - x, 0, 1, running_intersection=False)
    np.testing.assert_allclose(mirrored_lower, 1 - upper, atol=1e-12)
    np.testing.assert_allclose(mirrored_upper, 1 - lower, atol=1e-12)
    assert upper[-1] - lower[-1] < 0.3


def test_narrows_on_constant_data_around_the_value() -> None:
    lower, upper = betting_cs(np.full(200, 2.0), LO, HI, running_intersection=False)
    width = upper - lower
    assert width[0] == HI - LO
    assert np.all(np.diff(width) <= 0)  # without the running intersection: no guarantee, but so it goes here
    assert width[-1] < width[49] < width[9] < width[0]
    assert width[-1] < 1.0
    assert lower[-1] < 2.0 < upper[-1]


def test_before_any_value_the_interval_is_the_whole_range() -> None:
    assert anytime_interval([], LO, HI) == (LO, HI)


@pytest.mark.parametrize(("k", "dist"), [pytest.param(k, d, id=d.name) for k, d in enumerate(distributions())])
def test_covers_under_optional_stopping_where_the_classical_interval_does_not(k: int, dist: Distribution) -> None:
    """Issue 26: resampled study differences and a known symmetric law, the rule "stop once the interval
    excludes 0" looked at every batch: the CS covers the true mean at least 95% of the time; where that
    mean is 0 every stop is a false decision, and the classical interval's coverage falls clearly short."""
    reps = 1000
    r = simulate(dist, reps=reps, first=FIRST, batch=BATCH, cap=CAP, lo=LO, hi=HI, rng_seed=100 + k)
    anytime, classical = r["anytime"]["coverage"], r["classical"]["coverage"]
    print(
        f"{dist.name}: anytime {anytime:.3f}, classical under peeking {classical:.3f}, at n={CAP} "
        f"{r['classical_fixed_n']['coverage']:.3f}"
    )
    assert _wilson(anytime * reps, reps)[0] >= 0.95
    if abs(dist.mean) < 1e-12:
        assert _wilson(classical * reps, reps)[1] < 0.95
        assert classical < r["classical_fixed_n"]["coverage"]  # the peeking, not the t interval, lost it
        assert r["classical"]["stopped_early"] > 0.1


@pytest.mark.parametrize(("probs", "decides"), [((0.25, 0.5, 0.25), 0.0), ((0.15, 0.5, 0.35), 0.3)])
def test_covers_where_the_range_is_tight_enough_for_it_to_decide(probs: tuple[float, ...], decides: float) -> None:
    """On [-11, 11] with at most 40 seeds the CS never excludes 0 above, so its coverage there is 1 for
    want of trying. On {-1, 0, +1} bounded by [-1, 1], looked at after every value up to 100, it does
    decide, falsely at times where the mean is 0, and still covers at least 95% of the time."""
    dist = Distribution("{-1, 0, +1}", np.array([-1.0, 0.0, 1.0]), np.array(probs))
    reps = 1000
    r = simulate(dist, reps=reps, first=2, batch=1, cap=100, lo=-1.0, hi=1.0, rng_seed=7)
    # About 0.975 here (seeds 0-2 and 7: 0.969 to 0.99), five standard errors above the 0.95 it must reach.
    assert r["anytime"]["coverage"] >= 0.95
    assert r["anytime"]["stopped_early"] > decides
    assert _wilson(r["classical"]["coverage"] * reps, reps)[1] < 0.95
