"""Anytime-valid confidence sequences for the mean of a bounded variable.

A confidence sequence (CS) is a sequence of intervals C_1, C_2, ... such that, with probability at
least 1 - alpha, the true mean lies in *every* C_t at once. A classical 95% interval only promises
coverage at one sample size fixed in advance: adding seeds batch by batch and stopping as soon as it
looks decided ("optional stopping", peeking) lets its coverage fall well below 95%. A CS stays valid
at any data-dependent stopping time, so a study may look after every batch and stop when it likes.

This is the betting CS of I. Waudby-Smith and A. Ramdas, "Estimating means of bounded random variables
by betting", Journal of the Royal Statistical Society Series B, 2024 (arXiv:2010.09686). It follows the
authors' reference implementation, ``confseq.betting.betting_cs`` of the ``confseq`` package 0.0.11
with its defaults, step for step so that the bounds agree exactly (tests/data/confseq/): the hedged
capital process max(K+ / 2, K- / 2), predictable plug-in empirical-Bernstein bets truncated at
1 / (2m) and 1 / (2(1 - m)), a grid of candidate means and the threshold 1 / alpha (Ville's inequality).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The reference's defaults: half the capital on each side, bets at most half of what would allow ruin.
_THETA = 0.5
_TRUNC_SCALE = 0.5
# Its regularisation of the running mean and variance: one fake observation of mean 1/2, variance 1/4.
_PRIOR_MEAN = 0.5
_PRIOR_VARIANCE = 0.25


def _predmix_eb_bets(x: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """The predictable plug-in empirical-Bernstein bets (``lambda_predmix_eb``): the bet at t uses only
    x_1..x_{t-1}, which is what keeps the capital a martingale under the null."""
    t = np.arange(1, len(x) + 1)
    mean = np.minimum((_PRIOR_MEAN + np.cumsum(x)) / (t + 1), 1)
    variance = (_PRIOR_VARIANCE + np.cumsum(np.square(x - mean))) / (t + 1)
    previous_variance = np.append(_PRIOR_VARIANCE, variance[:-1])
    return np.sqrt(2 * np.log(1 / alpha) / (t * np.log(1 + t) * previous_variance))


def _unit_betting_cs(x: NDArray[np.float64], alpha: float, breaks: int) -> tuple[NDArray, NDArray]:
    """The CS for data in [0, 1], without running intersection: the candidate means whose hedged
    capital has stayed at most 1 / alpha, padded by one grid step on each side."""
    # The reference's grid is np.arange(0, 1 + 1/breaks, 1/breaks), whose values are i * (1/breaks);
    # for some breaks (6, 9, 21, ...) that arange overshoots to a point past 1, which is left out here.
    grid = np.arange(breaks + 1) * (1 / breaks)
    # Both sides bet with alpha * theta; the bets are >= 0, so only the upper truncation can bind.
    bets = _predmix_eb_bets(x, alpha * _THETA)
    step = x[None, :] - grid[:, None]
    with np.errstate(divide="ignore"):
        positive = np.minimum(bets[None, :], _TRUNC_SCALE / grid[:, None])
        negative = np.minimum(bets[None, :], _TRUNC_SCALE / (1 - grid[:, None]))
    capital_positive = np.cumprod(1 + positive * step, axis=1)
    capital_negative = np.cumprod(1 - negative * step, axis=1)
    capital = np.maximum(_THETA * capital_positive, (1 - _THETA) * capital_negative)
    inside = capital <= 1 / alpha

    nonempty = inside.any(axis=0)
    first = np.argmax(inside, axis=0)
    last = len(grid) - 1 - np.argmax(inside[::-1], axis=0)
    lower = np.where(nonempty, grid[first], 0.0)
    upper = np.where(nonempty, grid[last], 1.0)
    return np.maximum(0, lower - 1 / breaks), np.minimum(1, upper + 1 / breaks)


def betting_cs(
    x: ArrayLike,
    lo: float,
    hi: float,
    alpha: float = 0.05,
    breaks: int = 1000,
    running_intersection: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper bounds on the mean of ``x`` (values in [lo, hi]) after each of its n values, in
    x's units; with probability >= 1 - alpha all n intervals hold the mean at once. Costs a
    (breaks + 1) x n array. The running intersection (on by default) is a CS too, and never wider."""
    values = np.asarray(x, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"betting_cs needs a 1-d sequence, got shape {values.shape}")
    if not lo < hi:
        raise ValueError(f"betting_cs needs lo < hi, got lo={lo}, hi={hi}")
    if not 0 < alpha < 1:
        raise ValueError(f"betting_cs needs 0 < alpha < 1, got {alpha}")
    if breaks < 1:
        raise ValueError(f"betting_cs needs breaks >= 1, got {breaks}")
    outside = ~((values >= lo) & (values <= hi))
    if outside.any():
        raise ValueError(f"betting_cs: {int(outside.sum())} value(s) outside [{lo}, {hi}], e.g. {values[outside][0]}")

    lower, upper = _unit_betting_cs((values - lo) / (hi - lo), alpha, breaks)
    if running_intersection:
        lower, upper = np.maximum.accumulate(lower), np.minimum.accumulate(upper)
    return lo + (hi - lo) * lower, lo + (hi - lo) * upper


def anytime_interval(x: ArrayLike, lo: float, hi: float, alpha: float = 0.05) -> tuple[float, float]:
    """The running-intersected interval after the last value of ``x``: valid however the number of
    values was chosen, looks included. With no values yet, all of [lo, hi]."""
    lower, upper = betting_cs(x, lo, hi, alpha=alpha)
    if len(lower) == 0:
        return float(lo), float(hi)
    return float(lower[-1]), float(upper[-1])
